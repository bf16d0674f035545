import hashlib
import random

from core.sessions import has_text, merge_bursts, session_rows, split_by_gap, split_of, turns_and_hash


def m(mid, sender, date, text="x", **kw):
    return {"id": mid, "sender_id": sender, "date": date, "text": text, **kw}


def test_split_uses_total_seconds_across_days():
    msgs = [m(1, 1, 0), m(2, 2, 3599), m(3, 1, 3599 + 86_400), m(4, 2, 3599 + 86_400 + 10)]
    assert [[x["id"] for x in s] for s in split_by_gap(msgs, 3600)] == [[1, 2], [3, 4]]


def test_gap_equal_to_limit_stays_in_session():
    assert len(split_by_gap([m(1, 1, 0), m(2, 1, 600)], 600)) == 1
    assert len(split_by_gap([m(1, 1, 0), m(2, 1, 601)], 600)) == 2


def test_bursts_merge_and_keep_message_boundaries():
    turns = merge_bursts([m(1, 1, 0, "hi"), m(2, 1, 1, "you there?"), m(3, 2, 2, "yes"), m(4, 1, 3, "ok")])
    assert [(t.speaker_id, t.messages) for t in turns] == [
        (1, ["hi", "you there?"]),
        (2, ["yes"]),
        (1, ["ok"]),
    ]
    assert turns[0].message_ids == [1, 2]


def test_forwards_and_media_only_are_not_anyones_words():
    turns = merge_bursts([m(1, 1, 0, "mine"), m(2, 1, 1, "theirs", forwarded=1), m(3, 1, 2, ""), m(4, 2, 3, "ok")])
    assert [t.messages for t in turns] == [["mine"], ["ok"]]


def test_session_closes_only_after_the_gap():
    rows = session_rows(9, [m(1, 1, 0), m(2, 2, 100)], gap_seconds=600, now=650)
    assert rows[0]["closed"] == 0
    rows = session_rows(9, [m(1, 1, 0), m(2, 2, 100)], gap_seconds=600, now=701)
    assert rows[0]["closed"] == 1
    assert rows[0]["id"] == "9-1" and rows[0]["n_turns"] == 2


def test_eval_split_is_stable_and_about_five_percent():
    ids = [f"{d}-{i}" for d in range(50) for i in range(100)]
    share = sum(split_of(i) == "eval" for i in ids) / len(ids)
    assert 0.035 < share < 0.065
    assert [split_of(i) for i in ids[:200]] == [split_of(i) for i in ids[:200]]


def test_content_hash_depends_on_who_said_what():
    _, a = turns_and_hash([m(1, 1, 0, "hi"), m(2, 2, 1, "yo")])
    _, b = turns_and_hash([m(1, 2, 0, "hi"), m(2, 1, 1, "yo")])
    assert a != b
    assert a == turns_and_hash([m(7, 1, 5, "hi"), m(8, 2, 6, "yo")])[1]


def test_content_hash_keeps_the_layout_stored_hashes_were_made_with():
    messages = [m(1, 5, 0, "Привет"), m(2, 5, 1, "ты тут?"), m(3, 8, 2, "fwd", forwarded=1), m(4, 8, 3, "在")]
    layout = "5\x1fПривет\x1fты тут?\x1e8\x1f在\x1e".encode()
    assert turns_and_hash(messages) == (2, hashlib.sha256(layout).hexdigest())


def test_turns_are_counted_as_merge_bursts_makes_them():
    rng = random.Random(7)
    texts = ["hi", "ок", "你好", "  ", ""]
    for _ in range(300):
        chunk = [
            m(i, rng.choice([1, 2, None]), i, rng.choice(texts), forwarded=int(rng.random() < 0.2))
            for i in range(rng.randint(0, 12))
        ]
        with_text = [x for x in chunk if has_text(x)]
        assert turns_and_hash(with_text)[0] == len(merge_bursts(chunk))
