"""Unit test of the Jepsen checker (checker.py) on synthetic histories: a clean
history passes with the right counts, and every failure kind (lost,
conflicting, reordered) is detected, including the cases where the checker
must NOT excuse a loss (a gap in another epoch or range, a resume that was not
recovered only excuses by excluding the subscriber). Runs without a broker:

    /usr/bin/python3 tests/jepsen/test_checker.py
"""

import sys
sys.dont_write_bytecode = True

import os
import subprocess
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checker import History, check  # noqa: E402

CH = "c0"
E1, E2 = "ep-1", "ep-2"


class Build:
    """A tiny DSL for histories: publishes acked at positions, subscribers
    receiving messages by name."""

    def __init__(self):
        self.h = History()

    def pub(self, key, ack=None, err=None, ch=CH, attempt=1, pub="p1"):
        rec = {"pub": pub, "ch": ch, "key": key, "data": {"k": key, "i": 0}, "attempt": attempt}
        if ack is not None:
            rec["ack"] = {"epoch": ack[0], "seq": ack[1]}
        else:
            rec["err"] = err or "unavailable"
        self.h.add("pub", **rec)
        return self

    def sub(self, name, epoch=E1, seq=0, ch=CH, before_load=True, recovered=None, session=1):
        self.h.add("sub", sub=name, ch=ch, epoch=epoch, seq=seq, session=session,
                   before_load=before_load, recovered=recovered)
        return self

    def msgs(self, name, *items, ch=CH, session=1):
        """items: (seq, key) pairs delivered in this order."""
        for seq, key in items:
            self.h.add("msg", sub=name, ch=ch, seq=seq, data={"k": key, "i": 0}, session=session)
        return self

    def gap(self, name, epoch, a, b, ch=CH):
        self.h.add("gap", sub=name, ch=ch, epoch=epoch, **{"from": a, "to": b}, session=1)
        return self

    def epoch(self, name, epoch, seq=0, ch=CH):
        self.h.add("epoch", sub=name, ch=ch, epoch=epoch, seq=seq, session=1)
        return self

    def closed(self, name, code=1006):
        self.h.add("closed", sub=name, session=1, code=code, reason="")
        return self

    def check(self):
        return check(self.h)


def clean():
    """Three acked publishes, both subscribers receive all three in order."""
    b = Build().pub("a", (E1, 1)).pub("b", (E1, 2)).pub("c", (E1, 3))
    b.sub("s1").sub("s2")
    b.msgs("s1", (1, "a"), (2, "b"), (3, "c")).msgs("s2", (1, "a"), (2, "b"), (3, "c"))
    return b


class CleanHistories(unittest.TestCase):
    def test_clean_history_passes_with_counts(self):
        r = clean().check()
        self.assertTrue(r.ok, r.summary())
        self.assertEqual((r.published, r.acked, r.lost, r.conflicting, r.reordered),
                         (3, 3, 0, 0, 0))
        self.assertEqual(r.delivered, {"s1": 3, "s2": 3})
        self.assertEqual(len(r.checked), 2)

    def test_errors_counted_by_code_and_retry_acked_once(self):
        b = Build().pub("a", err="unavailable").pub("a", err="closed", attempt=2) \
                   .pub("a", (E1, 1), attempt=3).pub("a", (E1, 1), attempt=4) \
                   .pub("z", err="unavailable")
        b.sub("s1").msgs("s1", (1, "a"))
        r = b.check()
        self.assertTrue(r.ok, r.summary())
        self.assertEqual(r.published, 2)
        self.assertEqual(r.acked, 1)
        self.assertEqual(r.unresolved, 1)
        self.assertEqual(dict(r.errors), {"unavailable": 2, "closed": 1})

    def test_key_acked_at_two_positions_counts_once(self):
        # The same message acked at two positions (its key forgotten in a new
        # epoch) and received once: not lost; reported as double_acked.
        b = Build().pub("a", (E1, 1)).pub("a", (E2, 1), attempt=2)
        b.sub("s1").msgs("s1", (1, "a"))
        r = b.check()
        self.assertTrue(r.ok, r.summary())
        self.assertEqual((r.acked, r.double_acked), (1, 1))

    def test_unacked_message_missing_is_not_lost(self):
        b = Build().pub("a", (E1, 1)).pub("b", err="unavailable")
        b.sub("s1").msgs("s1", (1, "a"))
        self.assertTrue(b.check().ok)

    def test_delivered_but_unacked_message_is_fine(self):
        b = Build().pub("a", err="unavailable")
        b.sub("s1").sub("s2").msgs("s1", (1, "a")).msgs("s2", (1, "a"))
        self.assertTrue(b.check().ok)


class Lost(unittest.TestCase):
    def test_acked_message_missing_is_lost(self):
        b = Build().pub("a", (E1, 1)).pub("b", (E1, 2)).pub("c", (E1, 3))
        b.sub("s1").sub("s2")
        b.msgs("s1", (1, "a"), (2, "b"), (3, "c")).msgs("s2", (1, "a"), (3, "c"))
        r = b.check()
        self.assertFalse(r.ok)
        self.assertEqual(r.lost, 1)
        self.assertIn("s2 never received b", r.summary())

    def test_gap_covering_the_ack_excuses(self):
        b = Build().pub("a", (E1, 1)).pub("b", (E1, 2)).pub("c", (E1, 3))
        b.sub("s1").msgs("s1", (1, "a")).gap("s1", E1, 2, 2).msgs("s1", (3, "c"))
        r = b.check()
        self.assertTrue(r.ok, r.summary())
        self.assertEqual((r.excused, r.gap_events), (1, {"s1": 1}))

    def test_gap_in_another_range_or_epoch_does_not_excuse(self):
        for gap in ((E1, 3, 9), (E2, 2, 2)):
            b = Build().pub("a", (E1, 1)).pub("b", (E1, 2))
            b.sub("s1").msgs("s1", (1, "a")).gap("s1", *gap)
            r = b.check()
            self.assertEqual(r.lost, 1, f"gap {gap}: {r.summary()}")

    def test_subscriber_that_closed_is_not_loss_checked(self):
        b = Build().pub("a", (E1, 1)).pub("b", (E1, 2))
        b.sub("s1").msgs("s1", (1, "a")).closed("s1", 4013)
        r = b.check()
        self.assertTrue(r.ok, r.summary())
        self.assertEqual(r.checked, [])

    def test_subscriber_after_load_is_not_loss_checked(self):
        b = Build().pub("a", (E1, 1)).pub("b", (E1, 2))
        b.sub("s1", before_load=False).msgs("s1", (2, "b"))
        self.assertTrue(b.check().ok)

    def test_recovered_resume_keeps_the_loss_check(self):
        b = Build().pub("a", (E1, 1)).pub("b", (E1, 2)).pub("c", (E1, 3))
        b.sub("s1").msgs("s1", (1, "a")).closed("s1")
        b.sub("s1", seq=3, recovered=True, session=2).msgs("s1", (3, "c"), session=2)
        r = b.check()
        self.assertEqual(r.lost, 1, r.summary())

    def test_unrecovered_resume_ends_the_loss_check(self):
        b = Build().pub("a", (E1, 1)).pub("b", (E1, 2)).pub("c", (E1, 3))
        b.sub("s1").msgs("s1", (1, "a")).closed("s1")
        b.sub("s1", seq=3, recovered=False, session=2).msgs("s1", (3, "c"), session=2)
        self.assertTrue(b.check().ok)

    def test_closed_without_resume_of_a_channel_is_not_checked_there(self):
        b = Build().pub("a", (E1, 1)).pub("x", (E1, 1), ch="c1")
        b.sub("s1").sub("s1", ch="c1").msgs("s1", (1, "a")).closed("s1")
        b.sub("s1", recovered=True, session=2)
        r = b.check()
        self.assertTrue(r.ok, r.summary())
        self.assertEqual(r.checked, [("s1", CH)])


class Conflicting(unittest.TestCase):
    def test_two_acks_at_one_position(self):
        b = Build().pub("a", (E1, 1)).pub("b", (E1, 1))
        r = b.check()
        self.assertEqual(r.conflicting, 1, r.summary())
        self.assertFalse(r.ok)

    def test_subscribers_seeing_different_messages_at_one_seq(self):
        b = Build().pub("a", err="unavailable").pub("b", err="unavailable")
        b.sub("s1").sub("s2").msgs("s1", (1, "a")).msgs("s2", (1, "b"))
        r = b.check()
        self.assertEqual(r.conflicting, 1, r.summary())

    def test_ack_against_a_delivery(self):
        b = Build().pub("a", (E1, 5))
        b.sub("s1", seq=4).msgs("s1", (5, "b"))
        r = b.check()
        self.assertEqual(r.conflicting, 1, r.summary())
        self.assertEqual(r.lost, 1)

    def test_same_seq_in_another_epoch_is_no_conflict(self):
        b = Build().pub("a", (E1, 1)).pub("b", (E2, 1))
        b.sub("s1").msgs("s1", (1, "a")).epoch("s1", E2).msgs("s1", (1, "b"))
        b.sub("s2").msgs("s2", (1, "a")).epoch("s2", E2).msgs("s2", (1, "b"))
        r = b.check()
        self.assertTrue(r.ok, r.summary())

    def test_msg_labelled_with_the_epoch_of_the_last_epoch_event(self):
        # s2 missed the epoch event: it places b at (E1, 1) where a is.
        b = Build().pub("a", (E1, 1)).pub("b", (E2, 1))
        b.sub("s1").msgs("s1", (1, "a")).epoch("s1", E2).msgs("s1", (1, "b"))
        b.sub("s2").msgs("s2", (1, "b"))
        r = b.check()
        self.assertEqual(r.conflicting, 1, r.summary())

    def test_same_message_on_two_channels_is_no_conflict(self):
        b = Build().pub("a", (E1, 1)).pub("b", (E1, 1), ch="c1")
        self.assertTrue(b.check().ok)


class Reordered(unittest.TestCase):
    def test_two_subscribers_disagreeing_on_order(self):
        b = Build().pub("a", err="x").pub("b", err="x").pub("c", err="x")
        b.sub("s1").sub("s2")
        b.msgs("s1", (1, "a"), (2, "b"), (3, "c"))
        b.msgs("s2", (1, "a"), (2, "c"), (3, "b"))
        r = b.check()
        self.assertEqual(r.reordered, 1, r.summary())
        self.assertFalse(r.ok)

    def test_order_compared_on_common_messages_only(self):
        b = Build()
        b.sub("s1").sub("s2")
        b.msgs("s1", (1, "a"), (2, "b"), (3, "c"))
        b.msgs("s2", (1, "a"), (3, "c"))
        self.assertEqual(b.check().reordered, 0)

    def test_reordering_across_epochs_detected(self):
        b = Build()
        b.sub("s1").sub("s2")
        b.msgs("s1", (1, "a")).epoch("s1", E2).msgs("s1", (1, "b"))
        b.msgs("s2", (1, "b")).epoch("s2", E2).msgs("s2", (1, "a"))
        r = b.check()
        self.assertGreater(r.reordered, 0, r.summary())
        self.assertGreater(r.conflicting, 0)


class CommandLine(unittest.TestCase):
    def run_cli(self, b):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "h.jsonl")
            b.h.dump(path)
            here = os.path.dirname(os.path.abspath(__file__))
            return subprocess.run([sys.executable, os.path.join(here, "checker.py"), path],
                                  capture_output=True, text=True, timeout=60)

    def test_saved_history_round_trip_and_exit_codes(self):
        p = self.run_cli(clean())
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("PASS", p.stdout)
        b = clean().pub("d", (E1, 4))
        p = self.run_cli(b)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("lost 2", p.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
