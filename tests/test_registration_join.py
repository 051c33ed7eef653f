"""The user-registration rows joined page by page, as the live connector builds them while the
next pages travel, are the rows normalisation builds from the whole answers; where the join
meets something it does not expect, normalisation builds them from the whole answers instead."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.m365.fetched import Fetched, read_recorded_tenant
from connectors.m365.normalise import (
    REGISTRATIONS_PATH,
    USERS_PATH,
    M365Settings,
    RegistrationJoin,
    normalise,
)

from helpers import REPO
from m365_verdicts import NOW

SECTION = "m365.entra.user_registration"
SETTINGS = M365Settings(mfa_exceptions=("Adele.Vance@contoso-health.org",))


def _fetched(users: list[Any], details: list[Any]) -> dict[str, Fetched]:
    return {
        USERS_PATH: Fetched(USERS_PATH, 200, {"value": users}, NOW),
        REGISTRATIONS_PATH: Fetched(REGISTRATIONS_PATH, 200, {"value": details}, NOW),
    }


def _rows(fetched: dict[str, Fetched], join: RegistrationJoin | None = None) -> Any:
    (section,) = normalise(fetched, SETTINGS, only=frozenset({SECTION}), join=join)
    assert section.status == "ok", section.reason
    return section.data


def _pages(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _users(count: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"00000000-0000-0000-0000-{i:012d}",
            "userPrincipalName": f"user{i}@contoso-health.org",
            "accountEnabled": i % 7 != 0,
            # Some users carry their type, others leave it to the registration detail.
            **({"userType": "Member"} if i % 3 else {}),
        }
        for i in range(count)
    ]


def _details(users: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "id": u["id"],
            "userType": "guest" if i % 5 == 0 else "member",
            "isMfaRegistered": i % 4 != 0,
            "methodsRegistered": ["microsoftAuthenticatorPush"] if i % 4 else [],
        }
        for i, u in enumerate(users)
        if i % 11  # a user without registration details keeps the defaults
    ]


@pytest.mark.parametrize("details_first", [True, False, None])
def test_rows_joined_page_by_page_are_the_rows_built_from_whole_answers(
    details_first: bool | None,
) -> None:
    users = _users(250)
    users[17]["userPrincipalName"] = "Adele.Vance@contoso-health.org"  # a declared exception
    details = list(reversed(_details(users)))  # not in the users' order
    join = RegistrationJoin(SETTINGS)
    user_pages, detail_pages = _pages(users, 40), _pages(details, 33)
    if details_first is None:  # the two chains' pages interleaved, as they arrive
        for i in range(max(len(user_pages), len(detail_pages))):
            if i < len(detail_pages):
                join.details(detail_pages[i])
            if i < len(user_pages):
                join.users(user_pages[i])
    else:
        first, then = (detail_pages, user_pages) if details_first else (user_pages, detail_pages)
        feed_first, feed_then = (
            (join.details, join.users) if details_first else (join.users, join.details)
        )
        for page in first:
            feed_first(page)
        for page in then:
            feed_then(page)
    whole = _rows(_fetched(users, details))
    joined = _rows(_fetched(users, details), join)
    assert joined is join.rows  # the join's rows were used, not rebuilt
    assert joined == whole
    assert whole[17]["declared_exception"] is True
    assert whole[0]["isMfaRegistered"] is None and whole[0]["methodsRegistered"] == []
    assert whole[3]["userType"] == "member" and whole[15]["userType"] == "guest"


def test_the_recorded_tenants_rows_are_the_same_joined_page_by_page() -> None:
    _info, fetched = read_recorded_tenant(REPO / "fixtures" / "tenants" / "fabrikam-clinic", NOW)
    join = RegistrationJoin(SETTINGS)
    join.users(fetched[USERS_PATH].data["value"])
    join.details(fetched[REGISTRATIONS_PATH].data["value"])
    assert _rows(dict(fetched), join) == _rows(dict(fetched))


@pytest.mark.parametrize(
    "spoil", ["a detail without an id", "a detail seen twice", "a page the join never saw"]
)
def test_a_join_that_met_the_unexpected_gives_way_to_the_whole_answers(spoil: str) -> None:
    users = _users(30)
    details = _details(users)
    if spoil == "a detail without an id":
        del details[3]["id"]
    elif spoil == "a detail seen twice":
        # A later copy that says otherwise: the whole answers keep the last one.
        details.append({"id": details[0]["id"], "isMfaRegistered": False})
    join = RegistrationJoin(SETTINGS)
    join.users(users[:10])
    join.details(details)
    join.users(users[10:] if spoil != "a page the join never saw" else users[10:20])
    assert join.result(len(users), len(details)) is None
    fetched = _fetched(users, details)
    (joined,) = normalise(fetched, SETTINGS, only=frozenset({SECTION}), join=join)
    (whole,) = normalise(fetched, SETTINGS, only=frozenset({SECTION}))
    assert (joined.status, joined.data, joined.reason) == (whole.status, whole.data, whole.reason)
    if spoil == "a detail without an id":
        assert whole.status == "error" and "KeyError" in (whole.reason or "")
    else:
        assert whole.status == "ok"
        if spoil == "a detail seen twice":
            assert whole.data[1]["id"] == details[0]["id"]
            assert whole.data[1]["isMfaRegistered"] is False


def test_an_item_that_is_not_an_object_stops_the_join() -> None:
    join = RegistrationJoin(SETTINGS)
    join.users(["not a user"])
    join.users(_users(3))
    assert join.broken and join.result(4, 0) is None


def test_a_failed_read_is_an_error_whatever_the_join_holds() -> None:
    users = _users(5)
    join = RegistrationJoin(SETTINGS)
    join.users(users)
    join.details(_details(users))
    fetched = _fetched(users, _details(users))
    fetched[REGISTRATIONS_PATH] = Fetched(
        REGISTRATIONS_PATH, 403, None, NOW, "reports answered 403: Forbidden"
    )
    (section,) = normalise(fetched, SETTINGS, only=frozenset({SECTION}), join=join)
    assert section.status == "error" and "403" in (section.reason or "")
