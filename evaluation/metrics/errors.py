"""The one error type the metrics raise for bad input: it names the input and the fix."""


class MetricsError(ValueError):
    def __init__(self, what: str, fix: str):
        super().__init__(f"{what}. Fix: {fix}")
        self.what, self.fix = what, fix
