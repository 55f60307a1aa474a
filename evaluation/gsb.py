"""GSB (good / same / bad) side-by-side studies between a system under test and a baseline.

    study = Study.create("gsb.db", "ours-vs-base", system_a="ours=out/ours", system_b="base=out/base",
                         cases="cases.csv", raters=["ann", "bob", "cy"], control_pairs=5)
    study.assign(raters_per_pair=3)
    study.submit(token, pair_id, {"overall": "left", "lip_sync": "same"})
    report = study.score()

Videos are matched by case id (file stem) across the two systems' folders; a case missing on one side
is stored with the systems it lacks and gets no pair. Left/right is drawn per pair from the study's
seed; judgments are stored relative to system A whatever side it was shown on.
"""

from __future__ import annotations

import json
import random
import secrets
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from evaluation.media import MediaError, blind_copy
from evaluation.scoring import GSBReport, ScoreConfig, score_judgments
from evaluation.store import (AssignmentRow, CaseRow, JudgmentRow, MetricRow, PairRow, ProblemRow, RaterRow,
                              StudyRow, SystemRow, database_url, make_engine, session_factory, utcnow)

CATEGORIES = ("overall", "visual_quality", "motion_quality", "motion_expressiveness", "lip_sync", "text_relevance",
              "identity")
CHOICES = ("left", "same", "right")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv")
CASE_FIELDS = ("kind", "language", "prompt", "reference_image", "audio")


class StudyError(ValueError):
    """A study cannot be made or used as asked; the message names the input and the fix."""


class AccessDenied(PermissionError):
    """A token, pair or media path a rater may not use."""


@dataclass(frozen=True)
class SystemSpec:
    name: str
    folder: Path

    @classmethod
    def parse(cls, spec: "str | Path | SystemSpec") -> "SystemSpec":
        """`name=folder`, or a folder (named after itself)."""
        if isinstance(spec, SystemSpec):
            return spec
        name, _, folder = str(spec).partition("=") if "=" in str(spec) else ("", "", str(spec))
        path = Path(folder).expanduser().resolve()
        if not path.is_dir():
            raise StudyError(f"system folder {folder!r} does not exist: give a folder of <case_id>.mp4 videos")
        return cls(name or path.name, path)

    def videos(self) -> dict[str, Path]:
        return {p.stem: p for p in sorted(self.folder.iterdir()) if p.suffix.lower() in VIDEO_SUFFIXES}


@dataclass(frozen=True)
class RaterPair:
    """A pair as its rater sees it: no system names, no file paths."""

    pair_id: str
    position: int
    prompt: str | None
    kind: str | None
    language: str | None
    judgments: dict[str, str]  # category -> choice already given
    unavailable: bool = False  # its videos could not be shown (reported to the owner): the rater moves on
    storyline: dict | None = None  # the case's storyline (shots with prompts), when the case list gave one


def read_cases(cases: "str | Path | list[dict] | pd.DataFrame") -> pd.DataFrame:
    """Case metadata from CSV / JSONL / parquet / records; needs a `case_id` column."""
    if isinstance(cases, pd.DataFrame):
        table = cases.copy()
    elif isinstance(cases, list):
        table = pd.DataFrame(cases)
    else:
        path = Path(cases)
        readers = {".csv": pd.read_csv, ".jsonl": lambda p: pd.read_json(p, lines=True), ".json": pd.read_json,
                   ".parquet": pd.read_parquet}
        if path.suffix.lower() not in readers or not path.is_file():
            raise StudyError(f"case list {path} is not a readable .csv/.jsonl/.parquet file")
        try:
            table = readers[path.suffix.lower()](path)
        except Exception as exc:  # noqa: BLE001 - any parse failure is the same user error
            raise StudyError(f"case list {path} could not be read ({exc}): fix the file") from exc
    if "case_id" not in table.columns:
        raise StudyError(f"case list has no case_id column (columns: {list(table.columns)}): add one, "
                         "matching the video file names without extension")
    table["case_id"] = table["case_id"].astype(str)
    if table["case_id"].duplicated().any():
        dupes = table.loc[table["case_id"].duplicated(), "case_id"].tolist()[:5]
        raise StudyError(f"case list repeats case ids {dupes}: each case once")
    return table


def read_storyline(record: dict, case_id: str) -> dict | None:
    """The case's storyline (a plan.json written by `avatar direct`), stored whole: the dashboards show it."""
    path = _clean(record.get("storyline"))
    if not path:
        return None
    try:
        story = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise StudyError(f"case {case_id}: storyline {path} could not be read ({type(exc).__name__}): give the "
                         "plan.json that `avatar direct` wrote, or leave the column empty") from exc
    if not isinstance(story, dict) or not isinstance(story.get("shots"), list):
        raise StudyError(f"case {case_id}: storyline {path} has no shots: give a plan.json from `avatar direct`")
    return story


def shot_table(story: dict) -> list[dict]:
    """A storyline's shots as rows for a table (times, who speaks, emotion, camera, prompts)."""
    return [{"from s": shot.get("start_s"), "to s": shot.get("end_s"), "speakers": ", ".join(
                str(k) for k in shot.get("speakers", [])), "emotion": shot.get("emotion", ""),
             "camera": shot.get("camera", ""), "prompt": shot.get("prompt", ""),
             "negative prompt": shot.get("negative_prompt", "")} for shot in story.get("shots", [])]


class Study:
    """One GSB study in a database. Make with `create`, reopen with `open`."""

    def __init__(self, db: str | Path, study_id: int, name: str):
        self.db = str(db)
        self.engine = make_engine(db)
        self.session = session_factory(self.engine)
        self.id, self.name = study_id, name

    # ---------------------------------------------------------------- lifecycle
    @classmethod
    def create(cls, db: str | Path, name: str, system_a, system_b, cases=None, raters=(),
               categories=CATEGORIES, control_pairs: int = 0, seed: int = 0, media_dir: str | Path | None = None
               ) -> "Study":
        """Match the two systems' videos by case id and make one blinded pair per matched case.

        system_a is the system under test; `control_pairs` cases also get a pair showing A's video on both sides.
        Raters are served copies of the videos, re-encoded alike with no metadata (evaluation.media), written to
        `media_dir` (default: beside a SQLite database, `<db>_media/<name>/`; else `outputs/gsb_media/<name>/`).
        """
        a, b = SystemSpec.parse(system_a), SystemSpec.parse(system_b)
        if a.name == b.name:
            raise StudyError(f"both systems are named {a.name!r}: name them, e.g. ours=FOLDER base=FOLDER")
        bad = [c for c in categories if c not in CATEGORIES and not c.replace("_", "").isalnum()]
        if not categories or bad:
            raise StudyError(f"categories {bad or categories} are not valid names")
        videos = {a.name: a.videos(), b.name: b.videos()}
        table = read_cases(cases) if cases is not None else pd.DataFrame(
            {"case_id": sorted(set(videos[a.name]) | set(videos[b.name]))})
        if table.empty:
            raise StudyError(f"no videos in {a.folder} or {b.folder} and no case list: nothing to compare")
        rng = random.Random(seed)
        engine = make_engine(db)
        media = Path(media_dir) if media_dir is not None else default_media_dir(db, name)
        with session_factory(engine)() as s, s.begin():
            if s.scalar(select(StudyRow).where(StudyRow.name == name)) is not None:
                raise StudyError(f"a study named {name!r} already exists in {db}: pick another name")
            shown = set(table["case_id"]) & set(videos[a.name]) & set(videos[b.name])
            copies = blinded_copies(videos, shown, media)
            study = StudyRow(name=name, seed=seed, categories=list(categories), media_dir=str(media.resolve()))
            s.add(study)
            s.flush()
            rows = {spec.name: SystemRow(study_id=study.id, name=spec.name, folder=str(spec.folder),
                                         under_test=spec is a) for spec in (a, b)}
            s.add_all(rows.values())
            s.flush()
            matched = []
            for rec in table.to_dict(orient="records"):
                key = rec["case_id"]
                missing = [n for n in (a.name, b.name) if key not in videos[n]]
                case = CaseRow(study_id=study.id, case_key=key, missing=missing, storyline=read_storyline(rec, key),
                               **{f: _clean(rec.get(f)) for f in CASE_FIELDS})
                s.add(case)
                if not missing:
                    matched.append(case)
            s.flush()
            for case in matched:
                flip = rng.random() < 0.5
                left, right = (b, a) if flip else (a, b)
                s.add(PairRow(study_id=study.id, public_id=secrets.token_hex(8), case_id=case.id,
                              left_system_id=rows[left.name].id, right_system_id=rows[right.name].id,
                              left_media=str(copies[left.name][case.case_key]),
                              right_media=str(copies[right.name][case.case_key])))
            for case in rng.sample(matched, min(control_pairs, len(matched))):
                copy = str(copies[a.name][case.case_key])
                s.add(PairRow(study_id=study.id, public_id=secrets.token_hex(8), case_id=case.id,
                              left_system_id=rows[a.name].id, right_system_id=rows[a.name].id,
                              left_media=copy, right_media=copy, is_control=True))
            study_id = study.id
        engine.dispose()
        study = cls(db, study_id, name)
        if raters:
            study.add_raters(raters)
        return study

    @classmethod
    def open(cls, db: str | Path, name: str | None = None) -> "Study":
        """The study `name` in `db` (with no name, the only study there)."""
        _require_database(db)
        engine = make_engine(db)
        with session_factory(engine)() as s:
            names = s.scalars(select(StudyRow.name).order_by(StudyRow.id)).all()
            if not name and len(names) == 1:
                name = names[0]
            row = s.scalar(select(StudyRow).where(StudyRow.name == name))
        engine.dispose()
        if row is None:
            raise StudyError(f"no study named {name!r} in {db} (studies there: {names or 'none'})")
        return cls(db, row.id, name)

    @classmethod
    def for_token(cls, db: str | Path, token: str) -> "Study":
        """The study a rater's token belongs to (a database may hold many studies; tokens are unique in it)."""
        _require_database(db)
        engine = make_engine(db)
        with session_factory(engine)() as s:
            row = s.execute(select(StudyRow.id, StudyRow.name).join(RaterRow, RaterRow.study_id == StudyRow.id)
                            .where(RaterRow.token == str(token))).first()
        engine.dispose()
        if row is None:
            raise AccessDenied("this link's token is not valid")
        return cls(db, row.id, row.name)

    @staticmethod
    def list(db: str | Path) -> list[str]:
        _require_database(db)
        engine = make_engine(db)
        with session_factory(engine)() as s:
            names = list(s.scalars(select(StudyRow.name).order_by(StudyRow.id)))
        engine.dispose()
        return names

    # ---------------------------------------------------------------- design
    @property
    def categories(self) -> list[str]:
        with self.session() as s:
            return list(s.get(StudyRow, self.id).categories)

    def systems(self) -> dict[str, SystemRow]:
        with self.session() as s:
            return {r.name: r for r in s.scalars(select(SystemRow).where(SystemRow.study_id == self.id))}

    def missing_cases(self) -> dict[str, list[str]]:
        """Case id -> systems with no video for it (these cases have no pair)."""
        with self.session() as s:
            rows = s.scalars(select(CaseRow).where(CaseRow.study_id == self.id))
            return {r.case_key: list(r.missing) for r in rows if r.missing}

    def counts(self) -> dict[str, int]:
        with self.session() as s:
            def n(model, *where):
                return s.scalar(select(func.count()).select_from(model).where(*where))
            pairs = select(PairRow.id).where(PairRow.study_id == self.id)
            return {"cases": n(CaseRow, CaseRow.study_id == self.id),
                    "pairs": n(PairRow, PairRow.study_id == self.id, ~PairRow.is_control),
                    "control_pairs": n(PairRow, PairRow.study_id == self.id, PairRow.is_control),
                    "raters": n(RaterRow, RaterRow.study_id == self.id),
                    "assignments": n(AssignmentRow, AssignmentRow.pair_id.in_(pairs)),
                    "judgments": n(JudgmentRow, JudgmentRow.pair_id.in_(pairs))}

    def add_raters(self, names) -> dict[str, str]:
        """Add raters (names already present keep their token); returns name -> token for all raters."""
        with self.session() as s, s.begin():
            have = {r.name for r in s.scalars(select(RaterRow).where(RaterRow.study_id == self.id))}
            s.add_all(RaterRow(study_id=self.id, name=str(n), token=secrets.token_urlsafe(16))
                      for n in dict.fromkeys(names) if str(n) not in have)
        return self.tokens()

    def tokens(self) -> dict[str, str]:
        with self.session() as s:
            return {r.name: r.token for r in s.scalars(select(RaterRow).where(RaterRow.study_id == self.id)
                                                       .order_by(RaterRow.id))}

    def assign(self, raters_per_pair: int = 3) -> dict[str, int]:
        """Give each pair `raters_per_pair` distinct raters, balancing load; control pairs go to every rater.

        Idempotent: pairs that already have enough raters are left alone; new raters or a larger k top up.
        Returns rater name -> number of assigned pairs.
        """
        with self.session() as s, s.begin():
            seed = s.get(StudyRow, self.id).seed
            raters = list(s.scalars(select(RaterRow).where(RaterRow.study_id == self.id).order_by(RaterRow.id)))
            if raters_per_pair < 1 or raters_per_pair > len(raters):
                raise StudyError(f"cannot give each pair {raters_per_pair} raters: the study has {len(raters)} "
                                 "raters; add raters or lower --raters-per-pair")
            pairs = list(s.scalars(select(PairRow).where(PairRow.study_id == self.id).order_by(PairRow.id)))
            existing = s.execute(select(AssignmentRow.pair_id, AssignmentRow.rater_id)
                                 .where(AssignmentRow.pair_id.in_([p.id for p in pairs]))).all()
            have: dict[int, set[int]] = {}
            for pair_id, rater_id in existing:
                have.setdefault(pair_id, set()).add(rater_id)
            load = {r.id: sum(r.id in v for v in have.values()) for r in raters}
            rng = random.Random(seed + 1 + len(existing))
            order = pairs[:]
            rng.shuffle(order)
            new: dict[int, list[int]] = {r.id: [] for r in raters}
            for pair in order:
                taken = have.setdefault(pair.id, set())
                want = len(raters) if pair.is_control else raters_per_pair
                free = [r.id for r in raters if r.id not in taken]
                rng.shuffle(free)
                for rater_id in sorted(free, key=lambda r: load[r])[:max(0, want - len(taken))]:
                    taken.add(rater_id)
                    load[rater_id] += 1
                    new[rater_id].append(pair.id)
            for rater_id, pair_ids in new.items():
                start = sum(rater_id in v for v in have.values()) - len(pair_ids)
                rng.shuffle(pair_ids)
                s.add_all(AssignmentRow(pair_id=p, rater_id=rater_id, position=start + i)
                          for i, p in enumerate(pair_ids))
            return {r.name: load[r.id] for r in raters}

    # ---------------------------------------------------------------- rating
    def rater(self, token: str) -> RaterRow:
        """The rater holding `token`, or AccessDenied."""
        with self.session() as s:
            row = s.scalar(select(RaterRow).where(RaterRow.token == str(token), RaterRow.study_id == self.id))
        if row is None:
            raise AccessDenied("this link's token is not valid for this study: ask the study owner for your link")
        return row

    def pairs_for(self, token: str) -> list[RaterPair]:
        """The rater's queue in order, with the judgments already given (to resume)."""
        rater = self.rater(token)
        with self.session() as s:
            rows = s.execute(select(AssignmentRow.position, PairRow, CaseRow)
                             .join(PairRow, PairRow.id == AssignmentRow.pair_id)
                             .join(CaseRow, CaseRow.id == PairRow.case_id)
                             .where(AssignmentRow.rater_id == rater.id).order_by(AssignmentRow.position)).all()
            given: dict[int, dict[str, str]] = {}
            for pair_id, category, choice in s.execute(
                    select(JudgmentRow.pair_id, JudgmentRow.category, JudgmentRow.choice)
                    .where(JudgmentRow.rater_id == rater.id)):
                given.setdefault(pair_id, {})[category] = choice
            reported = set(s.scalars(select(ProblemRow.pair_id).where(ProblemRow.rater_id == rater.id)))
        return [RaterPair(pair.public_id, position, case.prompt, case.kind, case.language, given.get(pair.id, {}),
                          pair.id in reported, case.storyline) for position, pair, case in rows]

    def storylines(self) -> dict[str, dict]:
        """Case id -> the storyline it was made from (cases whose list gave one)."""
        with self.session() as s:
            rows = s.execute(select(CaseRow.case_key, CaseRow.storyline)
                             .where(CaseRow.study_id == self.id, CaseRow.storyline.is_not(None))).all()
        return {key: story for key, story in sorted(rows) if story}

    def _assigned_pair(self, s, rater: RaterRow, pair_id: str) -> PairRow:
        pair = s.scalar(select(PairRow).join(AssignmentRow, AssignmentRow.pair_id == PairRow.id)
                        .where(PairRow.public_id == str(pair_id), AssignmentRow.rater_id == rater.id))
        if pair is None:
            raise AccessDenied(f"pair {pair_id!r} is not assigned to rater {rater.name!r}")
        return pair

    def submit(self, token: str, pair_id: str, choices: dict[str, str], seconds: float | None = None) -> dict[str, int]:
        """Store the rater's choices (category -> left/same/right); a repeat updates, never duplicates.
        Returns each category's revision after this write (1 for a first judgment; concurrent writes of one
        judgment get distinct revisions in commit order)."""
        rater = self.rater(token)
        categories = set(self.categories)
        for category, choice in choices.items():
            if category not in categories:
                raise StudyError(f"category {category!r} is not rated in this study ({sorted(categories)})")
            if choice not in CHOICES:
                raise StudyError(f"choice {choice!r} for {category} must be one of {CHOICES}")
        with self.session() as s, s.begin():
            pair = self._assigned_pair(s, rater, pair_id)
            test_id = s.scalar(select(SystemRow.id).where(SystemRow.study_id == self.id, SystemRow.under_test))
            test_on_left = pair.left_system_id == test_id
            rows = [{"pair_id": pair.id, "rater_id": rater.id, "category": c, "choice": ch, "seconds": seconds,
                     "value": {"left": 1, "same": 0, "right": -1}[ch] * (1 if test_on_left else -1),
                     "updated_at": utcnow()} for c, ch in choices.items()]
            return _upsert_judgments(s, rows) if rows else {}

    def media(self, token: str, pair_id: str, side: str) -> Path:
        """The video file for one side of a rater's pair; only files inside the systems' folders are served."""
        if side not in ("left", "right"):
            raise StudyError(f"side must be left or right, not {side!r}")
        rater = self.rater(token)
        with self.session() as s:
            pair = self._assigned_pair(s, rater, pair_id)
            path = pair.left_media if side == "left" else pair.right_media
        return self.check_media(path)

    def check_media(self, path: str | Path) -> Path:
        """`path` resolved (symlinks followed) if it lies inside one of the study's system folders."""
        resolved = Path(path).resolve()
        with self.session() as s:
            media_dir = s.scalar(select(StudyRow.media_dir).where(StudyRow.id == self.id))
        # a study made before blinded copies serves the systems' own files
        folders = [Path(media_dir).resolve()] if media_dir else [Path(r.folder).resolve() for r in self.systems().values()]
        if not any(resolved.is_relative_to(f) for f in folders) or not resolved.is_file():
            raise AccessDenied("media path refused: it is not a file inside this study's folders")
        return resolved

    def report_problem(self, token: str, pair_id: str, reason: str) -> None:
        """Record that the rater could not rate this pair (e.g. a video is missing), for the study owner."""
        rater = self.rater(token)
        with self.session() as s, s.begin():
            pair = self._assigned_pair(s, rater, pair_id)
            existing = s.scalar(select(ProblemRow).where(ProblemRow.pair_id == pair.id, ProblemRow.rater_id == rater.id))
            if existing is None:
                s.add(ProblemRow(pair_id=pair.id, rater_id=rater.id, reason=reason[:2000]))
            else:
                existing.reason, existing.created_at = reason[:2000], utcnow()

    def problems(self) -> pd.DataFrame:
        """Pairs raters could not rate, with why (for the owner: may name server paths)."""
        with self.session() as s:
            rows = s.execute(select(ProblemRow, PairRow.public_id, CaseRow.case_key, RaterRow.name)
                             .join(PairRow, PairRow.id == ProblemRow.pair_id)
                             .join(CaseRow, CaseRow.id == PairRow.case_id)
                             .join(RaterRow, RaterRow.id == ProblemRow.rater_id)
                             .where(PairRow.study_id == self.id).order_by(ProblemRow.id)).all()
        return pd.DataFrame([{"case_key": key, "pair": pid, "rater": rater, "reason": p.reason,
                              "when": p.created_at} for p, pid, key, rater in rows],
                            columns=["case_key", "pair", "rater", "reason", "when"])

    # ---------------------------------------------------------------- results
    def judgments(self) -> pd.DataFrame:
        """One row per judgment with case metadata and the system names (for owners, never for raters)."""
        with self.session() as s:
            systems = {r.id: r.name for r in s.scalars(select(SystemRow).where(SystemRow.study_id == self.id))}
            rows = s.execute(select(JudgmentRow, PairRow, CaseRow, RaterRow.name)
                             .join(PairRow, PairRow.id == JudgmentRow.pair_id)
                             .join(CaseRow, CaseRow.id == PairRow.case_id)
                             .join(RaterRow, RaterRow.id == JudgmentRow.rater_id)
                             .where(PairRow.study_id == self.id).order_by(JudgmentRow.id)).all()
        records = [{"case_key": case.case_key, "kind": case.kind, "language": case.language,
                    "pair": pair.public_id, "is_control": pair.is_control, "rater": rater,
                    "left_system": systems[pair.left_system_id], "right_system": systems[pair.right_system_id],
                    "category": j.category, "choice": j.choice, "value": j.value, "seconds": j.seconds,
                    "revision": j.revision, "updated_at": j.updated_at} for j, pair, case, rater in rows]
        columns = ["case_key", "kind", "language", "pair", "is_control", "rater", "left_system", "right_system",
                   "category", "choice", "value", "seconds", "revision", "updated_at"]
        return pd.DataFrame(records, columns=columns)

    def score(self, config: ScoreConfig = ScoreConfig()) -> GSBReport:
        return score_judgments(self.judgments(), self.categories, config)

    # ---------------------------------------------------------------- automatic metrics
    def videos(self) -> list[tuple[str, str, Path, dict]]:
        """(system, case_key, the system's own video file, case metadata) of every case shown in a pair."""
        systems = self.systems()
        files = {name: SystemSpec.parse(f"{name}={row.folder}").videos() for name, row in systems.items()}
        with self.session() as s:
            cases = s.scalars(select(CaseRow).join(PairRow, PairRow.case_id == CaseRow.id)
                              .where(PairRow.study_id == self.id, PairRow.is_control.is_(False))).all()
        out = []
        for case in sorted(cases, key=lambda c: c.case_key):
            meta = {f: getattr(case, f) for f in CASE_FIELDS}
            out += [(name, case.case_key, files[name][case.case_key], meta) for name in sorted(systems)
                    if case.case_key in files[name]]
        return out

    def sides(self, pair_id: str) -> tuple[str, str]:
        """(left system, right system) of a pair: for the study owner and tests, never for raters."""
        with self.session() as s:
            pair = s.scalar(select(PairRow).where(PairRow.study_id == self.id, PairRow.public_id == str(pair_id)))
            if pair is None:
                raise StudyError(f"no pair {pair_id!r} in study {self.name!r}")
            names = {r.id: r.name for r in s.scalars(select(SystemRow).where(SystemRow.study_id == self.id))}
        return names[pair.left_system_id], names[pair.right_system_id]

    def add_metrics(self, system: str, case_key: str, values: dict[str, float | None], note: str | None = None) -> None:
        """Store (replace) one video's automatic metrics: name -> value (None where it does not apply)."""
        with self.session() as s, s.begin():
            system_id = s.scalar(select(SystemRow.id).where(SystemRow.study_id == self.id, SystemRow.name == system))
            case_id = s.scalar(select(CaseRow.id).where(CaseRow.study_id == self.id, CaseRow.case_key == case_key))
            if system_id is None or case_id is None:
                raise StudyError(f"no system {system!r} / case {case_key!r} in study {self.name!r}")
            s.execute(delete(MetricRow).where(MetricRow.system_id == system_id, MetricRow.case_id == case_id))
            s.add_all(MetricRow(study_id=self.id, system_id=system_id, case_id=case_id, name=name,
                                value=None if value is None else float(value), note=None if value is not None else note)
                      for name, value in values.items())

    def metrics(self) -> pd.DataFrame:
        """One row per (system, case, metric): system, case_key, kind, name, value, note."""
        with self.session() as s:
            rows = s.execute(select(MetricRow, SystemRow.name, CaseRow.case_key, CaseRow.kind)
                             .join(SystemRow, SystemRow.id == MetricRow.system_id)
                             .join(CaseRow, CaseRow.id == MetricRow.case_id)
                             .where(MetricRow.study_id == self.id).order_by(MetricRow.id)).all()
        return pd.DataFrame([{"system": system, "case_key": key, "kind": kind, "name": m.name, "value": m.value,
                              "note": m.note} for m, system, key, kind in rows],
                            columns=["system", "case_key", "kind", "name", "value", "note"])

    def metrics_summary(self, kind: str | None = None) -> pd.DataFrame:
        """Per metric: each system's mean over the cases where it applies (and how many), A's first."""
        table = self.metrics()
        if kind is not None:
            table = table[table.kind == kind]
        if table.empty:
            return pd.DataFrame()
        systems = sorted(self.systems().values(), key=lambda r: not r.under_test)
        out = table.groupby(["name", "system"]).value.agg(["mean", "count"]).unstack("system")
        columns = {}
        for r in systems:
            if ("mean", r.name) in out:
                columns[r.name] = out[("mean", r.name)]
                columns[f"{r.name} cases"] = out[("count", r.name)].astype(int)
        summary = pd.DataFrame(columns).reset_index()
        from evaluation.metrics import EXPERIMENTAL

        summary["status"] = [f"experimental: {EXPERIMENTAL[n.split('.')[0]]}" if n.split(".")[0] in EXPERIMENTAL
                             else "validated" for n in summary["name"]]
        return summary

    def export(self, path: str | Path) -> Path:
        """Write the judgments to .csv or .parquet."""
        path = Path(path)
        table = self.judgments()
        if path.suffix == ".csv":
            table.to_csv(path, index=False)
        elif path.suffix == ".parquet":
            table.to_parquet(path, index=False)
        else:
            raise StudyError(f"export path {path} must end in .csv or .parquet")
        return path


def default_media_dir(db: str | Path, name: str) -> Path:
    """Where a study's blinded copies go by default: beside a SQLite file, else under outputs/gsb_media/."""
    url = database_url(db)
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    if url.startswith("sqlite") and ":memory:" not in url:
        path = Path(url.split("///", 1)[-1])
        return path.parent / f"{path.stem}_media" / safe
    return Path("outputs") / "gsb_media" / safe


def blinded_copies(videos: dict[str, dict[str, Path]], shown: set[str], media: Path) -> dict[str, dict[str, Path]]:
    """system -> case -> a re-encoded copy (random file name, no metadata) of each video of the shown cases."""
    copies: dict[str, dict[str, Path]] = {}
    for system, by_case in videos.items():
        for key, path in by_case.items():
            if key in shown:
                try:
                    copies.setdefault(system, {})[key] = blind_copy(path, media / f"{secrets.token_hex(8)}.mp4")
                except MediaError as exc:
                    raise StudyError(f"{exc}: fix or remove that video, then create the study again") from exc
    return copies


def _require_database(db: str | Path) -> None:
    """A SQLite study database must exist before it is read (a typo must not create an empty one)."""
    url = database_url(db)
    if url.startswith("sqlite") and ":memory:" not in url and not Path(url.split("///", 1)[-1]).is_file():
        raise StudyError(f"study database {url.split('///', 1)[-1]} does not exist: check --db (make a study with "
                         "`avatar eval gsb create` first)")


def _clean(value):
    return None if value is None or (isinstance(value, float) and value != value) else str(value)


def _upsert_judgments(s, rows: list[dict]) -> dict[str, int]:
    """INSERT ... ON CONFLICT (pair, rater, category) DO UPDATE (revision + 1), in the database's own dialect;
    returns category -> revision."""
    dialect = s.get_bind().dialect.name
    keys = ["pair_id", "rater_id", "category"]
    fields = ("choice", "value", "seconds", "updated_at")
    if dialect in ("sqlite", "postgresql"):
        insert = (sqlite if dialect == "sqlite" else postgresql).insert(JudgmentRow).values(rows)
        upsert = insert.on_conflict_do_update(
            index_elements=keys, set_={**{c: insert.excluded[c] for c in fields}, "revision": JudgmentRow.revision + 1})
        return dict(s.execute(upsert.returning(JudgmentRow.category, JudgmentRow.revision)).all())
    revisions = {}
    for row in rows:  # other databases: update, else insert (a racing insert retries as an update)
        where = [getattr(JudgmentRow, k) == row[k] for k in keys]
        existing = s.scalar(select(JudgmentRow).where(*where).with_for_update())
        if existing is None:
            try:
                with s.begin_nested():
                    s.add(JudgmentRow(**row, revision=1))
                revisions[row["category"]] = 1
                continue
            except IntegrityError:
                existing = s.scalar(select(JudgmentRow).where(*where).with_for_update())
        for k in fields:
            setattr(existing, k, row[k])
        existing.revision += 1
        revisions[row["category"]] = existing.revision
    return revisions
