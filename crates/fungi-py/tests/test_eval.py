"""fungi_rs.eval: kNN, linear probe and retrieval mAP through the Rust core, on generated data.

The linear probe is compared with the `fungi probe` command line when its binary is built
(FUNGI_BIN, else target/release/fungi or target/debug/fungi), which runs the same fungi-eval
library on the same float32 features; otherwise with a NumPy check of the optimum.
"""
import json
import os
import pathlib
import subprocess

import numpy as np
import pytest

from fungi_rs import eval as fe

ROOT = pathlib.Path(__file__).resolve().parents[3]


def problem(per_class, classes, dim, seed, shift=1.2):
    """Interleaved labels 0, 1, ..., classes-1, 0, 1, ...; class c's mean is `shift` on axis c."""
    rng = np.random.default_rng(seed)
    y = np.arange(per_class * classes) % classes
    x = rng.normal(size=(len(y), dim))
    x[np.arange(len(y)), y % dim] += shift
    return x.astype(np.float32), y.astype(np.int64)


def fungi_bin():
    for p in [os.environ.get("FUNGI_BIN"), ROOT / "target" / "release" / "fungi", ROOT / "target" / "debug" / "fungi"]:
        if p and pathlib.Path(p).is_file():
            return str(p)
    return None


def write_extract_dir(d, x, y):
    """A `fungi extract`-like output directory with one block named `features`."""
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps({"blocks": [{"name": "features", "dim": x.shape[1], "offset": 0}]}))
    np.save(d / "features.npy", x.astype(np.float32))
    np.save(d / "labels.npy", y.astype(np.int64))
    return str(d)


def softmax(s):
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_linear_probe_equals_the_command_line(tmp_path):
    exe = fungi_bin()
    if exe is None:
        pytest.skip("no fungi binary (cargo build --release -p fungi-cli)")
    xtr, ytr = problem(20, 3, 6, 1)
    xte, yte = problem(10, 3, 6, 2)
    xva, yva = problem(6, 3, 6, 3)
    tr = write_extract_dir(tmp_path / "train", xtr, ytr)
    te = write_extract_dir(tmp_path / "test", xte, yte)
    va = write_extract_dir(tmp_path / "val", xva, yva)
    cases = [
        ({"pca": 4}, ["--pca", "4"]),
        ({"val": xva, "val_labels": yva, "lambdas": [1e-4, 1e-2, 1.0]},
         ["--val", va, "--lambdas", "1e-4,1e-2,1", "--pca", "0"]),
        ({"few_shot": 4}, ["--few-shot", "4", "--pca", "0"]),
    ]
    for kw, args in cases:
        rp = tmp_path / "r.json"
        subprocess.run([exe, "probe", "--train", tr, "--test", te, "--report", str(rp), *args],
                       check=True, capture_output=True)
        want = json.loads(rp.read_text())["results"][0]
        got = fe.linear_probe(xtr, ytr, xte, yte, **kw)
        np.testing.assert_array_equal(got["predictions"], want["predictions"])
        assert got["accuracy"] == pytest.approx(want["accuracy"], abs=0)
        assert got["lambda"] == pytest.approx(want["lambda"], rel=1e-15)
        assert list(got["validation"].values()) == [v["accuracy"] for v in want["validation"]]
        assert got["converged"] and got["pca"] == want["pca"]


def test_linear_probe_is_self_consistent():
    xtr, ytr = problem(25, 4, 8, 4)
    xte, yte = problem(10, 4, 8, 5)
    r = fe.linear_probe(xtr, ytr, xte, yte)
    assert r["predictions"].dtype == np.int64 and r["predictions"].shape == (40,)
    assert r["accuracy"] == pytest.approx(np.mean(r["predictions"] == yte))
    per_class = [np.mean(r["predictions"][yte == c] == c) for c in range(4)]
    assert r["mean_per_class_accuracy"] == pytest.approx(np.mean(per_class))
    lams = fe.default_lambdas()
    assert len(lams) == 5 and lams[0] == pytest.approx(5e-6) and lams[-1] == pytest.approx(5e-4)
    assert list(r["validation"]) == lams
    best = max(r["validation"].values())
    assert r["lambda"] == min(l for l, a in r["validation"].items() if a == best)
    assert r["converged"] and not r["pca"] and 0.5 < r["accuracy"] <= 1.0
    # No test labels: the same model, no score.
    r2 = fe.linear_probe(xtr, ytr, xte)
    np.testing.assert_array_equal(r2["predictions"], r["predictions"])
    assert r2["accuracy"] is None and r2["lambda"] == r["lambda"]
    # Torch-like inputs (anything with .detach().cpu()), lists and float labels give the same.
    class T:
        def __init__(self, a):
            self.a = a

        def detach(self):
            return self

        def cpu(self):
            return self.a

        def __array__(self, dtype=None, copy=None):
            return self.a
    r3 = fe.linear_probe(T(xtr), T(ytr.astype(np.float32)), xte.tolist(), list(yte))
    np.testing.assert_array_equal(r3["predictions"], r["predictions"])
    # Rows are L2-normalised by the protocol: scaling a row changes nothing.
    scaled = xtr * np.linspace(0.5, 3.0, len(xtr))[:, None].astype(np.float32)
    r4 = fe.linear_probe(scaled, ytr, xte, yte)
    np.testing.assert_array_equal(r4["predictions"], r["predictions"])
    # Few-shot: fixed λ, no validation; PCA is skipped when it is not below the fitted rows.
    r5 = fe.linear_probe(xtr, ytr, xte, yte, few_shot=1, pca=6)
    assert r5["lambda"] == fe.FEW_SHOT_LAMBDA and r5["validation"] == {} and not r5["pca"]
    r6 = fe.linear_probe(xtr, ytr, xte, yte, pca=4)
    assert r6["pca"]


def test_linear_probe_reaches_the_optimum():
    """At the returned λ, the refitted model's predictions are those of the exact minimiser of
    (1/n)·Σ CE + (λ/2)‖W‖² on the normalised rows (computed here by Newton's method)."""
    xtr, ytr = problem(15, 3, 4, 6)
    xte, yte = problem(10, 3, 4, 7)
    r = fe.linear_probe(xtr, ytr, xte, yte, lambdas=[1e-2])
    x = xtr / np.linalg.norm(xtr, axis=1, keepdims=True)
    t = xte / np.linalg.norm(xte, axis=1, keepdims=True)
    n, d, c = x.shape[0], x.shape[1], 3
    y1 = np.eye(c)[ytr]
    w = np.zeros(d * c)
    for _ in range(50):
        wm = w.reshape(c, d)
        p = softmax(x @ wm.T)
        g = ((p - y1).T @ x / n).reshape(-1) + 1e-2 * w
        h = np.zeros((d * c, d * c))
        for i in range(n):
            s = np.diag(p[i]) - np.outer(p[i], p[i])
            h += np.kron(s, np.outer(x[i], x[i])) / n
        w -= np.linalg.solve(h + 1e-2 * np.eye(d * c), g)
    want = np.argmax(t @ w.reshape(c, d).T, axis=1)
    np.testing.assert_array_equal(r["predictions"], want)


def test_knn():
    xtr, ytr = problem(20, 3, 5, 8, shift=3.0)
    xte, yte = problem(10, 3, 5, 9, shift=3.0)
    p = fe.knn(xtr, ytr, xte, k=5)
    assert p.dtype == np.int64 and p.shape == (30,)
    assert np.mean(p == yte) > 0.8
    # The protocol by hand: L2 rows, Euclidean, majority vote with ties to the smallest label.
    a = xtr / np.linalg.norm(xtr, axis=1, keepdims=True)
    b = xte / np.linalg.norm(xte, axis=1, keepdims=True)
    dist = ((b[:, None, :] - a[None, :, :]) ** 2).sum(-1)
    nn = np.argsort(dist, axis=1, kind="stable")[:, :5]
    want = [np.argmax(np.bincount(ytr[row], minlength=3)) for row in nn]
    np.testing.assert_array_equal(p, want)
    # k = 1 on the training rows themselves finds each row.
    np.testing.assert_array_equal(fe.knn(xtr, ytr, xtr, k=1), ytr)
    # PCA and few-shot run (PCA to 2 of 5 dims; 3 rows per class).
    assert fe.knn(xtr, ytr, xte, k=3, pca=2).shape == (30,)
    assert fe.knn(xtr, ytr, xte, k=20, few_shot=3).shape == (30,)


def gnd_dict(n_db, per_query):
    return {"imlist": [f"db{i}" for i in range(n_db)], "qimlist": [f"q{i}" for i in range(len(per_query))],
            "gnd": [{"easy": np.array(e, dtype=np.int64), "hard": h, "junk": j, "bbx": [0, 0, 5.5, 5]}
                    for e, h, j in per_query]}


def test_retrieval_map_perfect_ranking_is_100(tmp_path):
    # Query q = axis q; database row q (hard positive) and row q + 3 (easy positive) lead.
    db = np.zeros((8, 8))
    for q in range(3):
        db[q, q] = 1.0
        db[q + 3, q] = 1.0
        db[q + 3, 7] = 0.2
    db[6, 5] = db[7, 6] = 1.0
    queries = np.eye(8)[:3]
    per_query = [([q + 3], [q], []) for q in range(3)]
    g = gnd_dict(8, per_query)
    path = tmp_path / "gnd.json"
    path.write_text(json.dumps(g, default=lambda o: o.tolist()))
    for gnd in [g, g["gnd"], path, str(path)]:
        m = fe.retrieval_map(db, queries, gnd)
        assert m["map_medium"] == 100.0 and m["map_hard"] == 100.0
        assert m["mp_medium"] == {1: 100.0, 5: 100.0, 10: 100.0} == m["mp_hard"]
        np.testing.assert_array_equal(m["ap_medium"], [100.0] * 3)
        assert m["ap_hard"].dtype == np.float64 and not m["pca"]
    # A worse ranking scores less: swap which rows are positive.
    bad = gnd_dict(8, [([6], [7], []) for _ in range(3)])
    m = fe.retrieval_map(db, queries, bad, pca=4)
    assert m["map_medium"] < 50 and m["pca"]


def test_bad_shapes_and_values_are_value_errors(tmp_path):
    xtr, ytr = problem(5, 2, 3, 1)
    with pytest.raises(ValueError, match="^train: expected a 2-D array"):
        fe.knn(xtr[0], ytr, xtr)
    with pytest.raises(ValueError, match="^test: expected a 2-D array"):
        fe.linear_probe(xtr, ytr, xtr[None])
    with pytest.raises(ValueError, match="^train_labels: 9 labels for the 10 rows of train"):
        fe.knn(xtr, ytr[1:], xtr)
    with pytest.raises(ValueError, match="^test_labels: 3 labels"):
        fe.linear_probe(xtr, ytr, xtr, ytr[:3])
    with pytest.raises(ValueError, match="^train_labels: expected integer labels"):
        fe.knn(xtr, ytr + 0.5, xtr)
    with pytest.raises(ValueError, match="^train_labels: expected a 1-D"):
        fe.knn(xtr, ytr[:, None], xtr)
    with pytest.raises(ValueError, match="^test: .*3 columns in train, 4 in test|^test: .*4 columns"):
        fe.knn(xtr, ytr, np.zeros((2, 4)))
    with pytest.raises(ValueError, match="^val: .*columns"):
        fe.linear_probe(xtr, ytr, xtr, val=np.zeros((2, 4)), val_labels=[0, 1])
    with pytest.raises(ValueError, match="^val_labels: missing"):
        fe.linear_probe(xtr, ytr, xtr, val=xtr)
    with pytest.raises(ValueError, match="^k: expected a positive integer"):
        fe.knn(xtr, ytr, xtr, k=0)
    with pytest.raises(ValueError, match="^pca: expected a positive integer"):
        fe.linear_probe(xtr, ytr, xtr, pca=-3)
    with pytest.raises(ValueError, match="^lambdas: -1.0 is not"):
        fe.linear_probe(xtr, ytr, xtr, lambdas=[1e-3, -1])
    with pytest.raises(ValueError, match="^lambdas: not used with few_shot"):
        fe.linear_probe(xtr, ytr, xtr, lambdas=[1e-3], few_shot=2)
    with pytest.raises(ValueError, match="^train: .*NaN"):
        bad = xtr.copy()
        bad[3, 1] = np.nan
        fe.linear_probe(bad, ytr, xtr)
    with pytest.raises(ValueError, match="^train: stratified 80/20 split: class 7"):
        fe.linear_probe(xtr, np.r_[ytr[:-1], 7], xtr)
    with pytest.raises(ValueError, match="^train: expected real numbers"):
        fe.knn(np.array([["a"]]), [0], np.array([["b"]]))
    # Retrieval.
    db, q = np.eye(4), np.eye(4)[:2]
    g = gnd_dict(4, [([0], [1], []), ([2], [3], [])])
    with pytest.raises(ValueError, match="^db: 3 rows but gnd's imlist has 4"):
        fe.retrieval_map(db[:3], q, g)
    with pytest.raises(ValueError, match="^queries: 1 rows but gnd's qimlist has 2"):
        fe.retrieval_map(db, q[:1], g)
    past = gnd_dict(4, [([0], [9], []), ([2], [3], [])])
    with pytest.raises(ValueError, match=r"^gnd: .*gnd\[0\]\.hard\[0\].*index 9 is outside imlist"):
        fe.retrieval_map(db, q, past)
    nohard = gnd_dict(4, [([0], [], []), ([2], [3], [])])
    with pytest.raises(ValueError, match="^gnd: query 0 has no positive images in the hard protocol"):
        fe.retrieval_map(db, q, nohard)
    with pytest.raises(ValueError, match="^queries: .*columns"):
        fe.retrieval_map(db, np.eye(5)[:2], g)
    with pytest.raises(FileNotFoundError, match="nope.pkl"):
        fe.retrieval_map(db, q, tmp_path / "nope.pkl")
    with pytest.raises(ValueError, match="^gnd: expected a path"):
        fe.retrieval_map(db, q, 42)
    missing = {"imlist": g["imlist"], "qimlist": g["qimlist"], "gnd": [{"easy": [0], "hard": [1]}] * 2}
    with pytest.raises(ValueError, match=r"gnd\[0\]\.junk.*missing"):
        fe.retrieval_map(db, q, missing)
