"""SQLAlchemy models of a GSB study and the engine that holds them.

SQLite (WAL, busy timeout) is the embedded default; any SQLAlchemy URL works, PostgreSQL included.
Judgments are keyed (pair, rater, category): a second submission updates the row in one upsert, so
concurrent raters can neither lose nor duplicate a judgment.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, UniqueConstraint, create_engine,
                        event)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

from runtime.outputs import OutputError, check_writable


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class InStudy:
    """Columns of every row that belongs to one study."""

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)


class StudyRow(Base):
    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    seed: Mapped[int] = mapped_column(Integer)
    categories: Mapped[list] = mapped_column(JSON)
    media_dir: Mapped[str | None] = mapped_column(String(1000))  # the blinded copies raters are served
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    systems: Mapped[list["SystemRow"]] = relationship(back_populates="study", cascade="all, delete-orphan")


class SystemRow(InStudy, Base):
    """One of the two systems compared; `under_test` marks the one judgments are relative to."""

    __tablename__ = "systems"
    __table_args__ = (UniqueConstraint("study_id", "name"),)
    name: Mapped[str] = mapped_column(String(200))
    folder: Mapped[str] = mapped_column(String(1000))
    under_test: Mapped[bool] = mapped_column(Boolean)
    study: Mapped[StudyRow] = relationship(back_populates="systems")


class CaseRow(InStudy, Base):
    """A test case (one prompt, reference, audio). `missing` lists systems with no output for it."""

    __tablename__ = "cases"
    __table_args__ = (UniqueConstraint("study_id", "case_key"),)
    case_key: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str | None] = mapped_column(String(100))
    language: Mapped[str | None] = mapped_column(String(50))
    prompt: Mapped[str | None] = mapped_column(String(4000))
    reference_image: Mapped[str | None] = mapped_column(String(1000))
    audio: Mapped[str | None] = mapped_column(String(1000))
    storyline: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # the shots the case was made from
    missing: Mapped[list] = mapped_column(JSON, default=list)


class PairRow(InStudy, Base):
    """What a rater sees: two videos, left and right. A control pair shows one video on both sides."""

    __tablename__ = "pairs"
    public_id: Mapped[str] = mapped_column(String(32), unique=True)  # opaque id shown to raters
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    left_system_id: Mapped[int] = mapped_column(ForeignKey("systems.id"))
    right_system_id: Mapped[int] = mapped_column(ForeignKey("systems.id"))
    left_media: Mapped[str] = mapped_column(String(1000))
    right_media: Mapped[str] = mapped_column(String(1000))
    is_control: Mapped[bool] = mapped_column(Boolean, default=False)
    case: Mapped[CaseRow] = relationship()


class RaterRow(InStudy, Base):
    __tablename__ = "raters"
    __table_args__ = (UniqueConstraint("study_id", "name"),)
    name: Mapped[str] = mapped_column(String(200))
    token: Mapped[str] = mapped_column(String(64), unique=True)


class AssignmentRow(Base):
    """Rater r rates pair p; `position` orders a rater's queue. No rater gets a pair twice."""

    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("pair_id", "rater_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id", ondelete="CASCADE"), index=True)
    rater_id: Mapped[int] = mapped_column(ForeignKey("raters.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)


class JudgmentRow(Base):
    """One rater's verdict on one pair in one category.

    `choice` is what was clicked (left / same / right); `value` is relative to the system under test
    (+1 it is better, 0 same, -1 worse) whatever side it was shown on. `revision` counts the writes applied
    to the row, in commit order: the row holds the write that got the highest revision.
    """

    __tablename__ = "judgments"
    __table_args__ = (UniqueConstraint("pair_id", "rater_id", "category"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id", ondelete="CASCADE"), index=True)
    rater_id: Mapped[int] = mapped_column(ForeignKey("raters.id", ondelete="CASCADE"), index=True)
    category: Mapped[str] = mapped_column(String(100))
    choice: Mapped[str] = mapped_column(String(10))
    value: Mapped[int] = mapped_column(Integer)
    seconds: Mapped[float | None] = mapped_column(Float)  # time the rater spent on the pair, when known
    revision: Mapped[int] = mapped_column(Integer, default=1, server_default="1")  # 1 + updates applied to it
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class MetricRow(InStudy, Base):
    """An automatic metric of one system's video for one case (evaluation.metrics), shown beside the GSB scores."""

    __tablename__ = "metrics"
    __table_args__ = (UniqueConstraint("system_id", "case_id", "name"),)
    system_id: Mapped[int] = mapped_column(ForeignKey("systems.id", ondelete="CASCADE"))
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))  # e.g. lip_sync.confidence
    value: Mapped[float | None] = mapped_column(Float)
    note: Mapped[str | None] = mapped_column(String(2000))  # why a value is missing


class ProblemRow(Base):
    """A pair a rater could not rate (a video missing or refused), for the study owner; one per rater and pair."""

    __tablename__ = "problems"
    __table_args__ = (UniqueConstraint("pair_id", "rater_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id", ondelete="CASCADE"), index=True)
    rater_id: Mapped[int] = mapped_column(ForeignKey("raters.id", ondelete="CASCADE"))
    reason: Mapped[str] = mapped_column(String(2000))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def database_url(url_or_path: str | Path) -> str:
    """A SQLAlchemy URL as given, or a SQLite file URL for a plain path."""
    text = str(url_or_path)
    return text if "://" in text else f"sqlite:///{Path(text).expanduser().resolve()}"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets raters read while one writes; the busy timeout queues writers instead of failing them.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(url_or_path: str | Path, create: bool = True) -> Engine:
    """An engine for the study database (tables created when `create`)."""
    url = database_url(url_or_path)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            if Path(path).is_dir():
                raise OutputError(f"--db {path} is a folder", "give a SQLite file path (or a SQLAlchemy URL)")
            check_writable(Path(path).parent, "--db", Path(path))  # read-only places: one clear error
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=32)
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_size=24, max_overflow=16, pool_pre_ping=True)
    if create:
        Base.metadata.create_all(engine)
        _add_missing_columns(engine)
    return engine


LATER_COLUMNS = {  # columns added after the first release: (table, column) -> SQL type and default
    ("judgments", "revision"): "INTEGER NOT NULL DEFAULT 1",  # existing rows count as revision 1
    ("studies", "media_dir"): "VARCHAR(1000)",  # existing studies serve the systems' files themselves
    ("cases", "storyline"): "JSON",  # existing cases have none
}


def _add_missing_columns(engine: Engine) -> None:
    """Bring a database made by an earlier avatarkit up to date (create_all adds tables, not columns)."""
    from sqlalchemy import inspect, text

    inspector = inspect(engine)
    for (table, column), sql in LATER_COLUMNS.items():
        if column not in {c["name"] for c in inspector.get_columns(table)}:
            with engine.begin() as conn:
                conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {sql}"))


def session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)
