"""The demo booking agent: Diana at the DianaChat Health front desk, with booking tools over a real SQLite store.

Name it in a suite (``evals/booking.yaml`` replays ``datasets/dianachat_booking`` through it)::

    agent: {use: ../datasets/dianachat_demo/agent.py:build, db: runs/booking-demo.sqlite}

**The store.** One SQLite file per run (``db:``; else ``$DIANACHAT_BOOKING_DB``; else
``runs/booking-demo.sqlite``, relative to the working directory). The harness calls :func:`build` once per
conversation, and each call resets the file's ``bookings`` table to the same three seed bookings, so every
conversation starts from the same state and a booking the model makes is a real row. Every change is also
appended to the ``changes`` table, which a reset keeps: after the run it holds what every conversation did
(``conversation`` counts the resets; delete the file to start afresh). A resumed conversation starts from the
seed bookings again (its earlier turns' bookings are in ``changes``, not in ``bookings``).

One conversation at a time (``concurrency: 1`` in the suite): a conversation that resets the file while another
is still running would change that one's bookings under it, so a tool of the older conversation refuses to run
and says why (its error is recorded with the call) instead of writing into the newer one's state.

**The policy** (in the instructions, and enforced by the tools with ``ToolError``, whose message the model reads):
bookings only on the hour within the location's opening hours (``hours-*.md`` of the demo knowledge base); none
on Sundays; today is Monday, so no same-day bookings, and a booking on Monday can be neither moved nor cancelled
(at least a day's notice; the caller phones extension 1); one booking per slot.
"""

from __future__ import annotations

import os
import re
import sqlite3
import uuid
from contextlib import closing
from pathlib import Path
from typing import Literal

from livekit.agents import Agent, ToolError, function_tool, llm

Location = Literal["main_street", "lakeside"]
Day = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]

DAYS: tuple[str, ...] = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
TODAY = "monday"
LOCATION_NAMES = {"main_street": "Main Street", "lakeside": "Lakeside"}
# opening hours (24 h, opens, closes) from the demo knowledge base: hours-main-street.md, hours-lakeside.md
HOURS: dict[str, dict[str, tuple[int, int] | None]] = {
    "main_street": {
        "monday": (8, 18),
        "tuesday": (8, 18),
        "wednesday": (8, 18),
        "thursday": (8, 20),
        "friday": (8, 18),
        "saturday": (9, 13),
        "sunday": None,
    },
    "lakeside": {
        "monday": (9, 19),
        "tuesday": (9, 19),
        "wednesday": (9, 19),
        "thursday": (9, 17),
        "friday": (9, 17),
        "saturday": (8, 12),
        "sunday": None,
    },
}
# (id, name, location, day, time): what every conversation starts from
SEED: tuple[tuple[str, str, str, str, str], ...] = (
    ("B-101", "Maria Lopez", "main_street", "wednesday", "10:00"),
    ("B-102", "Tom Reyes", "lakeside", "thursday", "14:00"),
    ("B-103", "Sam Ortiz", "main_street", "monday", "15:00"),
)
FIRST_NEW_ID = 104
DEFAULT_DB = "runs/booking-demo.sqlite"
DB_ENV = "DIANACHAT_BOOKING_DB"

INSTRUCTIONS = f"""You are Diana, the front desk of DianaChat Health, a clinic with two locations: Main Street \
and Lakeside. You check availability and book, reschedule and cancel appointments with your tools, and you \
answer in one or two short spoken sentences (no lists, no markdown).

Today is Monday. Opening hours:
- Main Street: Monday to Wednesday and Friday 8 am to 6 pm, Thursday 8 am to 8 pm, Saturday 9 am to 1 pm, \
closed Sunday.
- Lakeside: Monday to Wednesday 9 am to 7 pm, Thursday and Friday 9 am to 5 pm, Saturday 8 am to noon, \
closed Sunday.

Booking policy:
- Appointments last one hour and start on the hour; the last one starts an hour before closing.
- No bookings on Sundays or outside opening hours, and no same-day bookings (nothing for today, Monday).
- Cancelling or moving a booking needs at least a day's notice: a booking for today can be neither cancelled \
nor moved by you; the caller phones extension 1 (a $40 late-cancellation fee may apply).
- You need the caller's full name to book. Never book, move or cancel without the caller asking for it.
- Refuse requests outside this policy politely, without calling a tool, and offer an alternative.

Tools: locations are main_street or lakeside, days are lower-case weekday names, times are 24-hour HH:MM \
("14:00" for 2 pm). If a tool refuses, tell the caller why and offer what it suggests. Give the booking id \
(such as B-{FIRST_NEW_ID}) when you book."""


class StoreReset(RuntimeError):
    """Another conversation reset the store since this one started (conversations must run one at a time)."""


class BookingStore:
    """The bookings in one SQLite file: reset per conversation, every change journaled (see the module doc)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.token = ""

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=5.0)
        con.row_factory = sqlite3.Row
        return con

    def reset(self) -> BookingStore:
        """Recreate ``bookings`` with the seed rows (``changes`` stays) and make this store the file's current one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.token = uuid.uuid4().hex
        with closing(self._connect()) as con, con:
            con.executescript(
                """
                DROP TABLE IF EXISTS bookings;
                DROP TABLE IF EXISTS meta;
                CREATE TABLE bookings (id TEXT PRIMARY KEY, name TEXT NOT NULL, location TEXT NOT NULL,
                                       day TEXT NOT NULL, time TEXT NOT NULL, UNIQUE (location, day, time));
                CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, conversation INTEGER,
                    action TEXT, booking_id TEXT, name TEXT, location TEXT, day TEXT, time TEXT,
                    at TEXT DEFAULT CURRENT_TIMESTAMP);
                """
            )
            con.executemany("INSERT INTO bookings VALUES (?, ?, ?, ?, ?)", SEED)
            last = con.execute("SELECT MAX(conversation) FROM changes").fetchone()[0]
            con.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [("token", self.token), ("next_id", str(FIRST_NEW_ID)), ("conversation", str((last or 0) + 1))],
            )
            con.execute("INSERT INTO changes (conversation, action) VALUES (?, 'reset')", ((last or 0) + 1,))
        return self

    def _checked(self, con: sqlite3.Connection) -> int:
        """This conversation's number, after making sure no other conversation has reset the file since."""
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("token") != self.token:
            raise StoreReset(
                f"the booking store {self.path} was reset by another conversation: run booking conversations "
                "one at a time (concurrency: 1)"
            )
        return int(meta["conversation"])

    def bookings(self) -> list[dict[str, str]]:
        with closing(self._connect()) as con:
            return [dict(r) for r in con.execute("SELECT * FROM bookings ORDER BY id")]

    def get(self, booking_id: str) -> dict[str, str] | None:
        with closing(self._connect()) as con:
            row = con.execute("SELECT * FROM bookings WHERE id = ?", (booking_id.strip().upper(),)).fetchone()
            return dict(row) if row else None

    def free_times(self, location: str, day: str) -> list[str]:
        hours = HOURS[location][day]
        if hours is None:
            return []
        with closing(self._connect()) as con:
            taken = {
                r[0] for r in con.execute("SELECT time FROM bookings WHERE location = ? AND day = ?", (location, day))
            }
        return [t for t in (f"{h:02d}:00" for h in range(hours[0], hours[1])) if t not in taken]

    def _journal(self, con: sqlite3.Connection, action: str, row: dict[str, str]) -> None:
        con.execute(
            "INSERT INTO changes (conversation, action, booking_id, name, location, day, time) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self._checked(con), action, row["id"], row["name"], row["location"], row["day"], row["time"]),
        )

    def add(self, name: str, location: str, day: str, time: str) -> dict[str, str]:
        with closing(self._connect()) as con, con:
            self._checked(con)
            (next_id,) = con.execute("SELECT value FROM meta WHERE key = 'next_id'").fetchone()
            row = {"id": f"B-{next_id}", "name": name, "location": location, "day": day, "time": time}
            con.execute("INSERT INTO bookings VALUES (:id, :name, :location, :day, :time)", row)
            con.execute("UPDATE meta SET value = ? WHERE key = 'next_id'", (str(int(next_id) + 1),))
            self._journal(con, "book", row)
        return row

    def move(self, booking_id: str, day: str, time: str) -> dict[str, str]:
        with closing(self._connect()) as con, con:
            self._checked(con)
            con.execute("UPDATE bookings SET day = ?, time = ? WHERE id = ?", (day, time, booking_id))
            row = dict(con.execute("SELECT * FROM bookings WHERE id = ?", (booking_id,)).fetchone())
            self._journal(con, "reschedule", row)
        return row

    def remove(self, booking_id: str) -> dict[str, str]:
        with closing(self._connect()) as con, con:
            self._checked(con)
            row = dict(con.execute("SELECT * FROM bookings WHERE id = ?", (booking_id,)).fetchone())
            con.execute("DELETE FROM bookings WHERE id = ?", (booking_id,))
            self._journal(con, "cancel", row)
        return row


# -- the policy: each check raises ToolError with what the model should tell the caller --------------------------

_TIME = re.compile(r"^\s*(\d{1,2})(?::(\d{2}))?\s*$")


def _where(location: str) -> str:
    if location not in HOURS:
        raise ToolError(f"unknown location {location!r}: the locations are main_street and lakeside")
    return location


def _weekday(day: str) -> str:
    d = day.strip().lower()
    if d not in DAYS:
        raise ToolError(f"unknown day {day!r}: give a weekday name such as tuesday")
    return d


def _slot(location: str, day: str, time: str) -> str:
    """The canonical ``HH:00`` of a bookable slot, or ToolError saying which rule the request breaks."""
    place = LOCATION_NAMES[location]
    hours = HOURS[location][day]
    if hours is None:
        raise ToolError(f"{place} is closed on {day.title()}s: no appointments that day")
    m = _TIME.match(time)
    if not m:
        raise ToolError(f"time {time!r} is not a 24-hour HH:MM time such as 14:00")
    hour, minute = int(m.group(1)), int(m.group(2) or 0)
    if minute != 0:
        raise ToolError("appointments start on the hour (for example 14:00)")
    if not hours[0] <= hour < hours[1]:
        raise ToolError(
            f"{place} is open {hours[0]:02d}:00 to {hours[1]:02d}:00 on {day.title()}s, so the last appointment "
            f"starts at {hours[1] - 1:02d}:00; {time} is outside opening hours"
        )
    return f"{hour:02d}:00"


def _not_today(day: str, what: str) -> None:
    if day == TODAY:
        raise ToolError(f"no same-day {what}: today is Monday, so the caller must phone extension 1")


class DianaAgent(Agent):
    """Diana with the booking tools over ``store`` (see the module doc for the policy)."""

    def __init__(self, store: BookingStore, *, chat_ctx: llm.ChatContext | None = None) -> None:
        super().__init__(instructions=INSTRUCTIONS, chat_ctx=chat_ctx)
        self.store = store

    def _booking(self, booking_id: str) -> dict[str, str]:
        row = self.store.get(booking_id)
        if row is None:
            raise ToolError(f"there is no booking {booking_id!r}; ask the caller to check the id (such as B-101)")
        return row

    @function_tool
    async def check_availability(self, location: Location, day: Day, time: str | None = None) -> str:
        """Which appointment times are free at a location on a day, or whether one time is free.

        Args:
            location: main_street or lakeside.
            day: the weekday, lower case.
            time: optional 24-hour HH:MM time to check, such as "14:00".
        """
        location, day = _where(location), _weekday(day)
        _not_today(day, "bookings")
        wanted = _slot(location, day, time) if time else None
        free = self.store.free_times(location, day)
        if not free:
            raise ToolError(f"{LOCATION_NAMES[location]} is closed on {day.title()}s")
        if wanted is None:
            return f"Free at {LOCATION_NAMES[location]} on {day.title()}: {', '.join(free)}."
        if wanted in free:
            return f"{wanted} on {day.title()} at {LOCATION_NAMES[location]} is free."
        return f"{wanted} on {day.title()} at {LOCATION_NAMES[location]} is taken; free: {', '.join(free)}."

    @function_tool
    async def book(self, name: str, location: Location, day: Day, time: str) -> str:
        """Book an appointment for the caller, once they have asked for it and given their full name.

        Args:
            name: the caller's full name.
            location: main_street or lakeside.
            day: the weekday, lower case.
            time: 24-hour HH:MM start time on the hour, such as "14:00".
        """
        if not name.strip():
            raise ToolError("a booking needs the caller's full name: ask for it")
        location, day = _where(location), _weekday(day)
        _not_today(day, "bookings")
        slot = _slot(location, day, time)
        if slot not in self.store.free_times(location, day):
            free = ", ".join(self.store.free_times(location, day)) or "none"
            raise ToolError(f"{slot} on {day.title()} at {LOCATION_NAMES[location]} is already booked; free: {free}")
        row = self.store.add(name.strip(), location, day, slot)
        return f"Booked {row['id']}: {row['name']}, {LOCATION_NAMES[location]}, {day.title()} at {slot}."

    @function_tool
    async def reschedule(self, booking_id: str, day: Day, time: str) -> str:
        """Move an existing booking to another day and time at the same location.

        Args:
            booking_id: the booking id, such as B-101.
            day: the new weekday, lower case.
            time: the new 24-hour HH:MM start time, such as "14:00".
        """
        row = self._booking(booking_id)
        day = _weekday(day)
        _not_today(row["day"], "changes to a booking")
        _not_today(day, "bookings")
        slot = _slot(row["location"], day, time)
        if (day, slot) != (row["day"], row["time"]) and slot not in self.store.free_times(row["location"], day):
            raise ToolError(f"{slot} on {day.title()} at {LOCATION_NAMES[row['location']]} is already booked")
        moved = self.store.move(row["id"], day, slot)
        return f"Moved {moved['id']} ({moved['name']}) to {day.title()} at {slot}, {LOCATION_NAMES[row['location']]}."

    @function_tool
    async def cancel(self, booking_id: str) -> str:
        """Cancel an existing booking.

        Args:
            booking_id: the booking id, such as B-101.
        """
        row = self._booking(booking_id)
        _not_today(row["day"], "cancellations")
        self.store.remove(row["id"])
        return f"Cancelled {row['id']} ({row['name']}, {row['day'].title()} at {row['time']})."


def db_path(db: str | os.PathLike[str] | None = None) -> Path:
    """The store's file: ``db``, else ``$DIANACHAT_BOOKING_DB``, else ``runs/booking-demo.sqlite``."""
    return Path(db or os.environ.get(DB_ENV) or DEFAULT_DB)


def build(chat_ctx: llm.ChatContext | None = None, db: str | os.PathLike[str] | None = None) -> DianaAgent:
    """Diana over the store in ``db`` (see :func:`db_path`), reset to the seed bookings: call once per conversation."""
    return DianaAgent(BookingStore(db_path(db)).reset(), chat_ctx=chat_ctx)
