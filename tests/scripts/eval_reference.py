#!/usr/bin/env python3
"""The paper code's evaluation protocols in Python (scikit-learn) on `fungi extract` outputs, next
to `fungi knn` / `fungi probe` reports of the same features.

    python3 -m venv /tmp/venv-ref && /tmp/venv-ref/bin/pip install scikit-learn numpy
    /tmp/venv-ref/bin/python tests/scripts/eval_reference.py --train T --test U [--pca 256] [--k 20] \
        [--shots 5] [--fungi-knn knn.json] [--fungi-knn-few knn5.json] [--fungi-probe probe.json] \
        [--fungi-probe-few probe5.json] [--json out.json]

T and U are `fungi extract` output directories (manifest.json, features.npy, labels.npy). For every
non-empty combination of the manifest's blocks (itertools.combinations, sizes 1..N, block order):

* features: each block L2-normalised per row (``x / max(‖x‖, 1e-12)``, ``F.normalize``), the blocks
  concatenated, float64;
* kNN (``train_knn_concat_grads.py``): ``PCA(n_components=pca, svd_solver="full")`` fitted on the
  training rows when ``pca < n_train`` and ``pca < dim``, then ``KNeighborsClassifier(n_neighbors=k)``
  (Euclidean, uniform vote); few-shot = the first ``shots`` rows of every class in dataset order
  (``sample_balanced(.., shuffle=False)``), same k;
* linear probe (``train_linear_concat_grads.py``, with scikit-learn in place of cyanure):
  ``LogisticRegression(fit_intercept=False, C=1/(λ·n), solver="lbfgs")`` (multinomial, L2) — the
  objective ``(1/n)·Σ CE + (λ/2)·‖W‖²`` — solved tightly (tol 1e-10, 20 000 iterations); λ among
  ``np.logspace(log10(5e-6), log10(5e-4), 5)`` by accuracy on the held-out 20 % of
  ``train_test_split(test_size=0.2, random_state=42, stratify=labels)`` (ties → the smallest λ), PCA
  fitted on the rows each model is fitted on, refitted on all of train with the best λ; few-shot: the
  first ``shots`` rows per class, λ = 5e-5, no validation.

With the ``--fungi-*`` reports, each row also shows fungi-rs's accuracy (and λ) and the fraction of
test predictions on which the two agree.
"""
import argparse
import itertools
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier

LAMBDAS = np.logspace(math.log10(5e-6), math.log10(5e-4), 5)
FEW_SHOT_LAMBDA = 5e-5


def load(d):
    d = Path(d)
    blocks = json.loads((d / "manifest.json").read_text())["blocks"]
    f = np.load(d / "features.npy").astype(np.float64)
    y = np.load(d / "labels.npy").astype(np.int64)
    out = {}
    for b in blocks:
        x = f[:, b["offset"]:b["offset"] + b["dim"]]
        out[b["name"]] = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return out, y


def first_per_class(y, shots):
    seen, idx = {}, []
    for i, l in enumerate(y):
        if seen.get(l, 0) < shots:
            seen[l] = seen.get(l, 0) + 1
            idx.append(i)
    return np.sort(np.array(idx))


def reduce(fit, others, pca):
    if pca and pca < fit.shape[0] and pca < fit.shape[1]:
        p = PCA(n_components=pca, svd_solver="full").fit(fit)
        return p.transform(fit), [p.transform(o) for o in others], True
    return fit, others, False


def knn(xtr, ytr, xte, k, pca):
    xtr, (xte,), used = reduce(xtr, [xte], pca)
    return KNeighborsClassifier(n_neighbors=k).fit(xtr, ytr).predict(xte), used


def logreg(x, y, lam):
    m = LogisticRegression(fit_intercept=False, C=1.0 / (lam * x.shape[0]), solver="lbfgs",
                           tol=1e-10, max_iter=20000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FutureWarnings of newer scikit-learn versions
        return m.fit(x, y)


def probe(xtr, ytr, xte, pca):
    fit, held = train_test_split(np.arange(len(ytr)), test_size=0.2, random_state=42, stratify=ytr)
    f, (h,), _ = reduce(xtr[fit], [xtr[held]], pca)
    scores = [float(np.mean(logreg(f, ytr[fit], lam).predict(h) == ytr[held])) for lam in LAMBDAS]
    best = LAMBDAS[int(np.argmax(scores))]  # first maximum: the smallest λ among ties
    f, (t,), used = reduce(xtr, [xte], pca)
    return logreg(f, ytr, best).predict(t), float(best), dict(zip(map(float, LAMBDAS), scores)), used


def probe_few(xtr, ytr, xte, shots, pca):
    idx = first_per_class(ytr, shots)
    f, (t,), used = reduce(xtr[idx], [xte], pca)
    return logreg(f, ytr[idx], FEW_SHOT_LAMBDA).predict(t), FEW_SHOT_LAMBDA, {}, used


def fungi_results(path):
    if not path:
        return {}
    return {r["combination"]: r for r in json.loads(Path(path).read_text())["results"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--pca", type=int, default=256)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--shots", type=int, default=5)
    for r in ["knn", "knn-few", "probe", "probe-few"]:
        ap.add_argument(f"--fungi-{r}", help=f"the fungi report of the {r} run, to compare with")
    ap.add_argument("--json", help="write every number here")
    a = ap.parse_args()
    tr, ytr = load(a.train)
    te, yte = load(a.test)
    names = list(tr)
    fungi = {r: fungi_results(getattr(a, "fungi_" + r.replace("-", "_"))) for r in
             ["knn", "knn-few", "probe", "probe-few"]}
    few = first_per_class(ytr, a.shots)
    rows = []
    print(f"{'protocol':<10} {'blocks':<28} {'sklearn':>8} {'fungi-rs':>8} {'agree':>6} "
          f"{'λ sk':>9} {'λ rs':>9} {'pca':>4} {'s':>6}")
    for size in range(1, len(names) + 1):
        for combo in itertools.combinations(names, size):
            name = "+".join(combo)
            xtr = np.concatenate([tr[b] for b in combo], axis=1)
            xte = np.concatenate([te[b] for b in combo], axis=1)
            runs = {
                "knn": lambda: knn(xtr, ytr, xte, a.k, a.pca) + (None, {}),
                "knn-few": lambda: knn(xtr[few], ytr[few], xte, a.k, a.pca) + (None, {}),
                "probe": lambda: probe(xtr, ytr, xte, a.pca),
                "probe-few": lambda: probe_few(xtr, ytr, xte, a.shots, a.pca),
            }
            for proto, run in runs.items():
                t0 = time.perf_counter()
                out = run()
                secs = time.perf_counter() - t0
                if proto.startswith("knn"):
                    pred, used, lam, val = out
                else:
                    pred, lam, val, used = out
                acc = float(np.mean(pred == yte))
                f = fungi[proto].get(name)
                agree = float(np.mean(np.asarray(f["predictions"]) == pred)) if f else None
                rows.append({"protocol": proto, "combination": name, "accuracy": acc, "lambda": lam,
                             "validation": val, "pca": used, "seconds": secs,
                             "fungi_accuracy": f["accuracy"] if f else None,
                             "fungi_lambda": f.get("lambda") if f else None, "agreement": agree})
                fmt = lambda v, s: "-" if v is None else format(v, s)  # noqa: E731
                print(f"{proto:<10} {name:<28} {acc:>8.4f} {fmt(f and f['accuracy'], '>8.4f'):>8} "
                      f"{fmt(agree, '>6.3f'):>6} {fmt(lam, '>9.3e'):>9} "
                      f"{fmt(f and f.get('lambda'), '>9.3e'):>9} {'yes' if used else 'no':>4} {secs:>6.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"train": a.train, "test": a.test, "pca": a.pca, "k": a.k,
                                            "shots": a.shots, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
