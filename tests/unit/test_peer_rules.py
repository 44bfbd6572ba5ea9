"""Each peer's decision rule on hand-made inputs, and the policies on a tiny seeded stream."""

from __future__ import annotations

import numpy as np
import pytest

from kcm.peers import PEERS, rules


def test_margin_and_entropy_on_hand_made_rows() -> None:
    p = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(rules.margin(p), [0.5, 0.05, 1.0])
    h = rules.entropy(p)
    assert h[2] == pytest.approx(0.0, abs=1e-9)
    assert h[1] > h[0] > h[2]
    assert rules.entropy(np.full((1, 4), 0.25))[0] == pytest.approx(np.log(4))


def test_uncertain_directions() -> None:
    assert rules.uncertain("margin", np.array([0.05, 0.5]), 0.1).tolist() == [True, False]
    assert rules.uncertain("entropy", np.array([0.2, 2.0]), 1.0).tolist() == [False, True]
    # QBC: call when at most `threshold` of the committee agree with the current answer
    assert rules.uncertain("qbc", np.array([2.0, 3.0, 4.0]), 3).tolist() == [True, True, False]
    with pytest.raises(ValueError, match="criterion"):
        rules.uncertain("coreset", np.zeros(1), 0.5)


def test_committee_votes_count_agreement_with_the_current_answer() -> None:
    current = np.array([1, 2, 0])
    committee = np.array([[1, 2, 1], [1, 0, 1], [1, 2, 2], [0, 2, 2]])
    assert rules.committee_votes(current, committee).tolist() == [3, 3, 0]


def test_budget_gate_spends_then_covers_the_rest_of_the_stream() -> None:
    assert rules.budget_gate(True, 5, 100) is True
    assert rules.budget_gate(False, 5, 100) is False
    assert rules.budget_gate(False, 5, 5) is True  # the budget left covers every request left
    assert rules.budget_gate(True, 0, 10) is False  # exhausted: the student answers


def test_knn_vote_weights_entropy_and_centroid_distance() -> None:
    # three neighbours: two close ones of class 1, a far one of class 0
    sims = np.array([0.9, 0.8, 0.2])
    labels = np.array([1, 1, 0])
    gram = np.array([[1.0, 0.9, 0.1], [0.9, 1.0, 0.1], [0.1, 0.1, 1.0]])
    p, h, dist = rules.knn_vote(sims, labels, gram, n_classes=3)
    w = 1 / (1 - sims) ** 2
    assert p[1] == pytest.approx((w[0] + w[1]) / w.sum(), rel=1e-6)
    assert p.argmax() == 1 and h < 0.2
    assert 0.0 <= dist < 0.2  # the query sits near its close neighbours' centroid
    # unanimous identical neighbours at the query: entropy 0 (up to the 1e-10 floor), distance 0
    p2, h2, d2 = rules.knn_vote(np.ones(2), np.array([2, 2]), np.ones((2, 2)), 3)
    assert p2.argmax() == 2 and h2 < 1e-6 and d2 == pytest.approx(0.0, abs=1e-6)
    assert rules.ocats_calls(h, dist, t_h=0.5, t_c=0.5) is False
    assert rules.ocats_calls(1.0, dist, t_h=0.5, t_c=0.5) is True
    assert rules.ocats_calls(h, 0.9, t_h=0.5, t_c=0.5) is True


def test_cascade_deferral_target_and_exploration() -> None:
    assert rules.deferral_target(1, 1, 0.3) == pytest.approx(0.3)
    assert rules.deferral_target(1, 2, 0.3) == 1.0
    assert rules.acts(0.2, explore_prob=0.1, coin=0.5) is True
    assert rules.acts(0.2, explore_prob=0.9, coin=0.5) is False  # explores: defers anyway
    assert rules.acts(0.7, explore_prob=0.0, coin=0.5) is False  # the head defers


def _tiny_stream(n_batches: int = 4, n: int = 60, seed: int = 0):
    from kcm.bench.online import OnlineStream
    from kcm.data.batch import Batch
    from kcm.features import Features

    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, 8)) * 3
    batches, feats, teacher = [], [], []
    for b in range(n_batches):
        y = rng.integers(0, 3, n)
        x = (centers[y] + rng.normal(size=(n, 8))).astype(np.float32)
        batches.append(
            Batch(
                ids=np.arange(n).astype(object),
                inputs=x,
                label=np.full(n, -1),
                gold=y,
                name=f"b{b}",
            )
        )
        feats.append(Features(small=x, dense=x))
        teacher.append(y.copy())  # a perfect teacher
    return OnlineStream(batches=batches, features=feats, teacher=teacher, n_classes=3)


@pytest.mark.parametrize("name", sorted(PEERS))
def test_every_peer_serves_the_stream_and_counts_its_calls(name: str) -> None:
    from kcm.bench.online import run_policy

    stream = _tiny_stream()
    peer = PEERS[name]
    loose = run_policy(peer.make(**peer.sweep[0]), stream, seed=0).result()
    assert loose["stream_n"] == stream.n
    assert 0.0 < loose["stream_large_share"] <= 1.0
    assert loose["stream_calls"] == round(loose["stream_large_share"] * stream.n)
    assert len(loose["curves"]["large_call_rate"]) == len(stream.batches)
    # an easy stream with a perfect teacher: answers mostly right
    assert loose["stream_accuracy"] > 0.6


def test_neural_caching_warmup_and_budget() -> None:
    from kcm.bench.online import run_policy

    stream = _tiny_stream()
    never = PEERS["nc_margin"].make(threshold=-1.0, warmup=50)  # the rule never asks
    r = run_policy(never, stream, seed=0).result()
    assert r["stream_calls"] == 50  # only the forced warm-up
    capped = PEERS["nc_margin"].make(threshold=2.0, budget=0.5, warmup=10)  # always asks
    r = run_policy(capped, stream, seed=0).result()
    assert r["stream_calls"] == round(0.5 * stream.n)
    thrifty = PEERS["nc_margin"].make(threshold=-1.0, budget=0.5, warmup=0)  # never asks ...
    r = run_policy(thrifty, stream, seed=0).result()
    assert r["stream_calls"] == round(0.5 * stream.n)  # ... until the budget covers the rest
    assert r["curves"]["large_call_rate"][-1] == 1.0


def test_ocats_thresholds_trade_calls() -> None:
    from kcm.bench.online import run_policy

    stream = _tiny_stream()
    strict = run_policy(PEERS["ocats"].make(t_h=0.0, t_c=0.0), stream, seed=0).result()
    loose = run_policy(PEERS["ocats"].make(t_h=10.0, t_c=2.0), stream, seed=0).result()
    assert strict["stream_large_share"] == 1.0
    # loose: only the very first request (an empty cache) goes to the teacher
    assert loose["stream_calls"] == 1


def test_qbc_keeps_a_checkpoint_only_for_a_retrain_with_new_answers() -> None:
    from kcm.features import Features

    nc = PEERS["nc_qbc"].make(threshold=0).start(n_classes=3, n_total=100, seed=0)
    x = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    nc.retrain_student()  # nothing learned yet: no retrain, no checkpoint (the untrained model)
    assert len(nc.checkpoints_) == 0
    nc.learn(Features(small=x, dense=x), np.array([0, 1, 2, 0, 1, 2]))
    nc.retrain_student()  # the first fit: still no checkpoint of an untrained model
    nc.learn(Features(small=x, dense=x), np.array([0, 1, 2, 0, 1, 2]))
    nc.retrain_student()
    assert len(nc.checkpoints_) == 1
    nc.retrain_student()  # nothing new: the committee does not fill with copies of the current model
    assert len(nc.checkpoints_) == 1


def test_cascade_warm_up_is_not_shortened_by_the_gold_examples() -> None:
    from kcm.features import Features

    oc = PEERS["online_cascade"].make().start(n_classes=3, n_total=100, seed=0)
    x = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
    oc.warm(Features(small=x, dense=x), np.arange(300) % 3)
    assert min(lv.updates for lv in oc.levels_) >= 10  # the levels learned the gold examples
    assert oc.warming_up()  # but the LLM still answers everything until it has taught them
