"""One error type for bad input to the model package: it names the input and the fix."""


class AvatarInputError(ValueError):
    def __init__(self, what: str, fix: str):
        super().__init__(f"{what}. Fix: {fix}")
        self.what, self.fix = what, fix
