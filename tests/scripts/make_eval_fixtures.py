#!/usr/bin/env python3
"""Reference values for fungi-eval's linear probe, stratified split and retrieval mAP.

    python -m venv /tmp/evalvenv && /tmp/evalvenv/bin/pip install numpy scikit-learn
    /tmp/evalvenv/bin/python tests/scripts/make_eval_fixtures.py      # from the repo root

(generated with numpy 2.4.6, scikit-learn 1.9.1, scipy 1.17.1). Writes tests/fixtures/eval/:

* split.json      `train_test_split(np.arange(n), test_size=0.2, random_state=42, stratify=y)`
                  indices for several label vectors, + raw MT19937 outputs of RandomState(42).
* logreg.json     multinomial logistic regression (no intercept, objective
                  mean CE + lambda/2 ||W||^2): the exact optimum by Newton's method (numpy),
                  scikit-learn's LogisticRegression(fit_intercept=False, C=1/(lambda n),
                  solver="lbfgs", tol=1e-10, max_iter=10000) coefficients and test predictions.
* probe.json      (lambdas as repr strings: serde_json's default parser can be 1 ulp off)
                  the linear-probe protocol over block combinations (per-block L2, concat,
                  optional PCA fitted on the fit rows, lambda chosen on a given validation set or
                  on the stratified 80/20 split of train with seed 42, ties -> smallest lambda,
                  refit; few-shot: first n per class, lambda = 5e-5) with scikit-learn.
* retrieval.json  DINO's utils.compute_map (revisited Oxford/Paris, copied below) on random
                  rankings and on features ranked by dot product (optional PCA fit on the
                  database), medium and hard protocols, in percent.
* gnd_tiny.pkl / gnd_tiny_py2.pkl / gnd_tiny.json   a small ground truth in the published
                  gnd_*.pkl layout (protocol 4; protocol 2 with Python-2 byte strings) and JSON;
                  gnd_bad_index.pkl, gnd_bad_bbx.pkl: malformed ones.
"""
import io, json, os, pickle, struct
import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

OUT = "tests/fixtures/eval"
os.makedirs(OUT, exist_ok=True)


def dump(name, obj):
    with open(os.path.join(OUT, name), "w") as f:
        json.dump(obj, f, separators=(",", ":"))
        f.write("\n")


def lst(a):
    return np.asarray(a).tolist()


# ---------------------------------------------------------------- stratified split
rs = np.random.RandomState(42)
raw = rs._bit_generator.random_raw(8).tolist()
perm10 = np.random.RandomState(42).permutation(10).tolist()
rng = np.random.default_rng(1)
split_cases = []
label_sets = [
    np.repeat([0, 1, 2], 10),
    np.array([5, 5, 5, 7, 7, 7, 9, 9, 9, 9, 9, 9, 9, 9, 9]),  # n = 15: ceil(0.2 * 15) = 4
    rng.permutation(np.repeat([-3, 0, 4, 8, 100, 1 << 40, -(1 << 35)], [2, 2, 2, 3, 5, 7, 11])),
    rng.integers(0, 10, 101) * 7 - 20,
    np.repeat(np.arange(10), 15),
    rng.permutation(np.repeat(np.arange(37), rng.integers(2, 50, 37))),
    rng.permutation(np.repeat([1, 2, 3, 4], [5, 5, 5, 6])),
]
for y in label_sets:
    tr, te = train_test_split(np.arange(len(y)), test_size=0.2, random_state=42, stratify=y)
    split_cases.append({"labels": lst(y), "train": lst(tr), "test": lst(te)})
dump("split.json", {"random_raw_seed42": raw, "permutation10_seed42": perm10, "cases": split_cases})


# ---------------------------------------------------------------- logistic regression
def objective(X, yi, W, lam):
    """W: [d, C]. Returns f, grad [d, C], and P."""
    n = X.shape[0]
    S = X @ W
    m = S.max(1, keepdims=True)
    E = np.exp(S - m)
    Z = E.sum(1, keepdims=True)
    P = E / Z
    f = np.mean(np.log(Z[:, 0]) - (S[np.arange(n), yi] - m[:, 0])) + 0.5 * lam * np.sum(W * W)
    R = P.copy()
    R[np.arange(n), yi] -= 1
    return f, X.T @ R / n + lam * W, P


def newton(X, y, lam):
    classes = np.unique(y)
    yi = np.searchsorted(classes, y)
    n, d = X.shape
    C = len(classes)
    W = np.zeros((d, C))
    for it in range(200):
        f, G, P = objective(X, yi, W, lam)
        if np.abs(G).max() < 1e-15:
            break
        # Hessian on vec(W) with index j * C + c.
        H = np.zeros((d * C, d * C))
        for i in range(n):
            A = np.diag(P[i]) - np.outer(P[i], P[i])
            H += np.kron(np.outer(X[i], X[i]), A)
        H = H / n + lam * np.eye(d * C)
        step = np.linalg.solve(H, G.reshape(-1)).reshape(d, C)
        t = 1.0
        while objective(X, yi, W - t * step, lam)[0] > f and t > 1e-10:
            t /= 2
        W = W - t * step
    f, G, _ = objective(X, yi, W, lam)
    return classes, W, f, np.abs(G).max()


def blobs(n, d, labels, spread, seed):
    r = np.random.default_rng(seed)
    centres = r.normal(size=(len(labels), d))
    yi = r.integers(0, len(labels), n)
    X = centres[yi] + spread * r.normal(size=(n, d))
    return X, np.asarray(labels)[yi]


def sk_fit(X, y, lam, binary_equiv=False):
    n = X.shape[0]
    C = (2.0 if binary_equiv else 1.0) / (lam * n)
    return LogisticRegression(fit_intercept=False, C=C, solver="lbfgs", tol=1e-10, max_iter=10000).fit(X, y)


def min_gap(scores):
    s = np.sort(scores, 1)
    return float((s[:, -1] - s[:, -2]).min())


logreg_cases = []
for name, (n, d, labels, spread, lam, seed) in {
    "three_classes": (60, 5, [0, 1, 2], 1.0, 1e-3, 10),
    "five_classes_small_lambda": (150, 8, [-7, 0, 3, 11, 1000], 1.5, 5e-6, 11),
    "two_classes": (80, 6, [4, 9], 1.2, 1e-4, 12),
    "seven_classes_wide": (200, 30, [1, 2, 3, 4, 5, 6, 7], 2.5, 5e-5, 13),
}.items():
    X, y = blobs(n, d, labels, spread, seed)
    Xt, yt = blobs(40, d, labels, spread, seed + 100)
    classes, W, f, g = newton(X, y, lam)
    sk = sk_fit(X, y, lam, binary_equiv=len(labels) == 2)
    pred = sk.predict(Xt)
    ours = classes[np.argmax(Xt @ W, 1)]
    assert (pred == ours).all(), name
    assert min_gap(Xt @ W) > 1e-6, name
    sk_coef = sk.coef_ if len(labels) > 2 else np.vstack([-sk.coef_[0] / 2, sk.coef_[0] / 2])
    print(f"logreg {name}: newton |grad|={g:.2e}, |sklearn - newton| = {np.abs(sk_coef - W.T).max():.2e}, max |W| = {np.abs(W).max():.2f}")
    logreg_cases.append({
        "name": name, "lambda": lam, "x_train": lst(X), "y_train": lst(y), "x_test": lst(Xt),
        "classes": lst(classes), "coef": lst(W.T), "objective": f,
        "sklearn_coef": lst(sk_coef), "sklearn_predictions": lst(pred),
    })
dump("logreg.json", {"cases": logreg_cases})


# ---------------------------------------------------------------- probe protocol
def l2(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def combos(nb):
    from itertools import combinations
    return [list(c) for s in range(1, nb + 1) for c in combinations(range(nb), s)]


def reduce(fit, other, p):
    if p is not None and p < fit.shape[0] and p < fit.shape[1]:
        pca = PCA(n_components=p, svd_solver="full").fit(fit)
        return pca.transform(fit), pca.transform(other), True
    return fit, other, False


LAMBDAS = np.logspace(np.log10(5e-6), np.log10(5e-4), 5)
labels5 = [-2, 3, 10, 11, 40]
r = np.random.default_rng(7)
centres = [r.normal(size=(5, 6)), r.normal(size=(5, 4))]


def make_split(n, seed):
    rr = np.random.default_rng(seed)
    yi = rr.integers(0, 5, n)
    feats = [c[yi] * 0.8 + rr.normal(size=(n, c.shape[1])) for c in centres]
    return feats, np.asarray(labels5)[yi]


train_f, train_y = make_split(120, 20)
test_f, test_y = make_split(60, 21)
val_f, val_y = make_split(40, 22)
names = ["emb", "kl"]


def protocol(mode, pca_dim, few_shot=None):
    results = []
    for c in combos(2):
        tr = np.hstack([l2(train_f[i]) for i in c])
        te = np.hstack([l2(test_f[i]) for i in c])
        scores = []
        if few_shot is not None:
            seen = {}
            rows = []
            for i, l in enumerate(train_y):
                if seen.get(l, 0) < few_shot:
                    seen[l] = seen.get(l, 0) + 1
                    rows.append(i)
            fit, fit_y, lam = tr[rows], train_y[rows], 5e-5
        else:
            if mode == "val":
                va = np.hstack([l2(val_f[i]) for i in c])
                a, a_y, b, b_y = tr, train_y, va, val_y
                final, final_y = np.vstack([tr, va]), np.concatenate([train_y, val_y])
            else:
                fi, hi = train_test_split(np.arange(len(train_y)), test_size=0.2, random_state=42, stratify=train_y)
                a, a_y, b, b_y = tr[fi], train_y[fi], tr[hi], train_y[hi]
                final, final_y = tr, train_y
            a, b, _ = reduce(a, b, pca_dim)
            for lam in LAMBDAS:
                m = sk_fit(a, a_y, lam)
                assert min_gap(m.decision_function(b)) > 1e-7
                scores.append({"lambda": repr(float(lam)), "accuracy": float(np.mean(m.predict(b) == b_y))})
            best = max(scores, key=lambda s: (s["accuracy"], -float(s["lambda"])))
            fit, fit_y, lam = final, final_y, float(best["lambda"])
        fit, te2, used = reduce(fit, te, pca_dim)
        m = sk_fit(fit, fit_y, lam)
        assert min_gap(m.decision_function(te2)) > 1e-7
        pred = m.predict(te2)
        results.append({
            "combination": "+".join(names[i] for i in c), "accuracy": float(np.mean(pred == test_y)),
            "lambda": repr(float(lam)), "validation": scores, "pca": used, "predictions": lst(pred),
        })
    return results


settings = []
for mode, pca_dim, few in [("split", None, None), ("split", 3, None), ("val", None, None), ("val", 5, None), ("split", 3, 4)]:
    res = protocol(mode, pca_dim, few)
    print("probe", mode, pca_dim, few, [(x["combination"], round(x["accuracy"], 4), x["lambda"]) for x in res])
    settings.append({"mode": mode, "pca_dim": pca_dim, "few_shot": few, "results": res})
dump("probe.json", {
    "block_names": names,
    "train": [lst(f) for f in train_f], "train_labels": lst(train_y),
    "test": [lst(f) for f in test_f], "test_labels": lst(test_y),
    "val": [lst(f) for f in val_f], "val_labels": lst(val_y),
    "lambdas": [repr(float(x)) for x in LAMBDAS], "settings": settings,
})


# ---------------------------------------------------------------- retrieval: DINO utils.py, copied (np.in1d -> np.isin, gone from numpy 2)
def compute_ap(ranks, nres):
    nimgranks = len(ranks)
    ap = 0
    recall_step = 1. / nres
    for j in np.arange(nimgranks):
        rank = ranks[j]
        if rank == 0:
            precision_0 = 1.
        else:
            precision_0 = float(j) / rank
        precision_1 = float(j + 1) / (rank + 1)
        ap += (precision_0 + precision_1) * recall_step / 2.
    return ap


def compute_map(ranks, gnd, kappas=[]):
    map = 0.
    nq = len(gnd)  # number of queries
    aps = np.zeros(nq)
    pr = np.zeros(len(kappas))
    prs = np.zeros((nq, len(kappas)))
    nempty = 0
    for i in np.arange(nq):
        qgnd = np.array(gnd[i]['ok'])
        # no positive images, skip from the average
        if qgnd.shape[0] == 0:
            aps[i] = float('nan')
            prs[i, :] = float('nan')
            nempty += 1
            continue
        try:
            qgndj = np.array(gnd[i]['junk'])
        except:
            qgndj = np.empty(0)
        # sorted positions of positive and junk images (0 based)
        pos = np.arange(ranks.shape[0])[np.isin(ranks[:, i], qgnd)]
        junk = np.arange(ranks.shape[0])[np.isin(ranks[:, i], qgndj)]
        k = 0
        ij = 0
        if len(junk):
            # decrease positions of positives based on the number of
            # junk images appearing before them
            ip = 0
            while (ip < len(pos)):
                while (ij < len(junk) and pos[ip] > junk[ij]):
                    k += 1
                    ij += 1
                pos[ip] = pos[ip] - k
                ip += 1
        # compute ap
        ap = compute_ap(pos, len(qgnd))
        map = map + ap
        aps[i] = ap
        # compute precision @ k
        pos += 1  # get it to 1-based
        for j in np.arange(len(kappas)):
            kq = min(max(pos), kappas[j])
            prs[i, j] = (pos <= kq).sum() / kq
        pr = pr + prs[i, :]
    map = map / (nq - nempty)
    pr = pr / (nq - nempty)
    return map, aps, pr, prs


def revisited(ranks, gnd):
    """DINO eval_image_retrieval.py step 3; ranks [db, nq]."""
    ks = [1, 5, 10]
    gm = [{"ok": np.concatenate([g["easy"], g["hard"]]), "junk": np.concatenate([g["junk"]])} for g in gnd]
    mapM, apsM, mprM, _ = compute_map(ranks, gm, ks)
    gh = [{"ok": np.concatenate([g["hard"]]), "junk": np.concatenate([g["junk"], g["easy"]])} for g in gnd]
    mapH, apsH, mprH, _ = compute_map(ranks, gh, ks)
    return {"map_medium": mapM * 100, "map_hard": mapH * 100, "mp_medium": lst(mprM * 100),
            "mp_hard": lst(mprH * 100), "ap_medium": lst(apsM * 100), "ap_hard": lst(apsH * 100)}


def random_gnd(nq, ndb, rr, empty_easy=(), empty_junk=()):
    gnd = []
    for q in range(nq):
        p = rr.permutation(ndb)
        ne = 0 if q in empty_easy else int(rr.integers(1, 6))
        nh = int(rr.integers(1, 5))
        nj = 0 if q in empty_junk else int(rr.integers(1, 6))
        gnd.append({"easy": sorted(p[:ne].tolist()), "hard": sorted(p[ne:ne + nh].tolist()),
                    "junk": sorted(p[ne + nh:ne + nh + nj].tolist())})
    return gnd


rr = np.random.default_rng(3)
ndb, nq = 40, 8
gnd = random_gnd(nq, ndb, rr, empty_easy=(2,), empty_junk=(5,))
ranks = np.stack([rr.permutation(ndb) for _ in range(nq)], 1)  # [db, nq]
ranked_case = {"gnd": gnd, "ranks": lst(ranks.T), **revisited(ranks, gnd)}

# Perfect: every query ranks its easy + hard first (then junk, then the rest) -> 100 medium.
perfect = np.stack([np.concatenate([g["easy"] + g["hard"], [i for i in range(ndb) if i not in g["easy"] + g["hard"]]]) for g in gnd], 1)
perfect_case = {"gnd": gnd, "ranks": lst(perfect.T), **revisited(perfect, gnd)}
assert abs(perfect_case["map_medium"] - 100) < 1e-12

# Features: two blocks, dot product after per-block L2 (+ PCA fit on the database, centred, not
# whitened, not re-normalised).
fdb = 60
nqf = 6
gnd_f = random_gnd(nqf, fdb, rr)
db_blocks = [rr.normal(size=(fdb, 5)), rr.normal(size=(fdb, 3))]
q_blocks = [db_blocks[0][:nqf] + 0.3 * rr.normal(size=(nqf, 5)), db_blocks[1][:nqf] + 0.3 * rr.normal(size=(nqf, 3))]
feat_results = []
for pca_dim in [None, 4]:
    for c in combos(2):
        db = np.hstack([l2(db_blocks[i]) for i in c])
        q = np.hstack([l2(q_blocks[i]) for i in c])
        used = pca_dim is not None and pca_dim < db.shape[0] and pca_dim < db.shape[1]
        if used:
            pca = PCA(n_components=pca_dim, svd_solver="full", whiten=False).fit(db)
            db, q = pca.transform(db), pca.transform(q)
        sim = db @ q.T  # [db, nq]
        ranks_f = np.argsort(-sim, axis=0, kind="stable")
        ss = np.sort(sim, 0)
        assert np.diff(ss, axis=0).min() > 1e-9
        feat_results.append({"pca_dim": pca_dim, "combination": "+".join(["a", "b"][i] for i in c),
                             "pca": bool(used), "ranks": lst(ranks_f.T), **revisited(ranks_f, gnd_f)})
dump("retrieval.json", {
    "ranked": ranked_case, "perfect": perfect_case,
    "features": {"gnd": gnd_f, "database": [lst(b) for b in db_blocks], "queries": [lst(b) for b in q_blocks],
                 "results": feat_results},
})
print("retrieval ranked:", ranked_case["map_medium"], ranked_case["map_hard"], ranked_case["mp_medium"], ranked_case["mp_hard"])


# ---------------------------------------------------------------- ground-truth files
tiny = {
    "imlist": [f"db_{i:03d}" for i in range(12)],
    "qimlist": ["q_a", "q_b", "q_c"],
    "gnd": [
        {"easy": [0, 3], "hard": [5], "junk": [7, 8], "bbx": [10.5, 20.0, 110.25, 220.0]},
        {"easy": [], "hard": [1, 2], "junk": [], "bbx": [0.0, 0.0, 50.0, 60.0]},
        {"easy": [11], "hard": [4, 6, 9], "junk": [10], "bbx": [1.0, 2.0, 3.0, 4.0]},
    ],
}
with open(os.path.join(OUT, "gnd_tiny.pkl"), "wb") as f:
    pickle.dump(tiny, f, protocol=4)
dump("gnd_tiny.json", tiny)


class Py2Pickler(pickle._Pickler):
    """Writes str as Python 2 byte strings (SHORT_BINSTRING), as a Python 2 pickle.dump did."""
    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        b = obj.encode("ascii")
        self.write(pickle.SHORT_BINSTRING + bytes([len(b)]) + b)
        self.memoize(obj)

    dispatch[str] = save_py2_str


buf = io.BytesIO()
Py2Pickler(buf, protocol=2).dump(tiny)
assert pickle.loads(buf.getvalue()) == tiny
assert b"U\x06imlist" in buf.getvalue()
with open(os.path.join(OUT, "gnd_tiny_py2.pkl"), "wb") as f:
    f.write(buf.getvalue())

bad = json.loads(json.dumps(tiny))
bad["gnd"][2]["junk"] = [10, 12]  # 12 is past imlist (12 images)
with open(os.path.join(OUT, "gnd_bad_index.pkl"), "wb") as f:
    pickle.dump(bad, f, protocol=4)
bad = json.loads(json.dumps(tiny))
bad["gnd"][1]["bbx"] = [0.0, 1.0, 2.0]
with open(os.path.join(OUT, "gnd_bad_bbx.pkl"), "wb") as f:
    pickle.dump(bad, f, protocol=4)

total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
print(f"{OUT}: {len(os.listdir(OUT))} files, {total} bytes")
