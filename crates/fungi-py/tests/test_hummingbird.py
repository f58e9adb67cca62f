"""fungi_rs.eval.hummingbird against an independent numpy implementation of the protocol
(exact search, softmax label transfer, PyTorch's align_corners=False bilinear upsampling)."""
import numpy as np
import pytest

from fungi_rs import eval as fe


def _data(seed, n, grid=(4, 4), patch=4, dim=8, classes=3, noise=0.6):
    # The same class centres for every split; the seed draws the masks and the noise.
    centres = np.random.default_rng(99).normal(size=(classes, dim))
    rng = np.random.default_rng(seed)
    gh, gw = grid
    masks = rng.integers(0, classes, size=(n, gh, gw))
    masks = np.repeat(np.repeat(masks, patch, axis=1), patch, axis=2).astype(np.uint8)
    # A few ignored pixels.
    masks[:, 0, 0] = 255
    feats = np.empty((n, gh * gw, dim), dtype=np.float32)
    for i in range(n):
        for p in range(gh * gw):
            c = masks[i, (p // gw) * patch + 1, (p % gw) * patch + 1]
            feats[i, p] = centres[c] + noise * rng.normal(size=dim)
    return feats, masks


def _bilinear_axis(out, inp):
    s = np.maximum((np.arange(out) + 0.5) * inp / out - 0.5, 0.0)
    i0 = np.minimum(np.floor(s).astype(int), inp - 1)
    i1 = np.minimum(i0 + 1, inp - 1)
    return i0, i1, s - i0


def _reference(tf, tm, vf, vm, grid, k, t, classes):
    gh, gw = grid
    n, h, w = tm.shape
    ph = h // gh
    mem, lab = [], []
    for i in range(n):
        for p in range(gh * gw):
            y, x = p // gw, p % gw
            block = tm[i, y * ph:(y + 1) * ph, x * ph:(x + 1) * ph].ravel()
            l = np.array([(block == c).sum() for c in range(classes)], dtype=np.float64) / block.size
            mem.append(tf[i, p] / np.linalg.norm(tf[i, p]))
            lab.append(l)
    mem, lab = np.array(mem, dtype=np.float64), np.array(lab)
    preds = []
    for j in range(vf.shape[0]):
        q = vf[j].astype(np.float64)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        cos = q @ mem.T
        nb = np.argsort(-cos, axis=1, kind="stable")[:, :k]
        c = np.take_along_axis(cos, nb, 1) / t
        wts = np.exp(c - c.max(1, keepdims=True))
        wts /= wts.sum(1, keepdims=True)
        scores = np.einsum("qk,qkc->qc", wts, lab[nb]).reshape(gh, gw, classes)
        y0, y1, ly = _bilinear_axis(vm.shape[1], gh)
        x0, x1, lx = _bilinear_axis(vm.shape[2], gw)
        top = scores[y0][:, x0] * (1 - lx)[None, :, None] + scores[y0][:, x1] * lx[None, :, None]
        bot = scores[y1][:, x0] * (1 - lx)[None, :, None] + scores[y1][:, x1] * lx[None, :, None]
        up = top * (1 - ly)[:, None, None] + bot * ly[:, None, None]
        preds.append(up.argmax(-1))
    return np.array(preds, dtype=np.uint8)


def test_hummingbird_matches_a_numpy_reference():
    tf, tm = _data(0, 10)
    vf, vm = _data(1, 4)
    r = fe.hummingbird(tf, tm, vf, vm, num_classes=3, k=5, temperature=0.1,
                       memory_size=10_000, index="exact", return_predictions=True)
    want = _reference(tf, tm, vf, vm, (4, 4), 5, 0.1, 3)
    got = r["predictions"]
    assert got.shape == vm.shape
    assert (got == want).mean() > 0.999, (got != want).sum()
    # mIoU from the predictions, computed here.
    ious = []
    keep = vm != 255
    for c in range(3):
        tp = ((got == c) & (vm == c) & keep).sum()
        d = (((got == c) | (vm == c)) & keep).sum()
        ious.append(tp / d)
    assert abs(r["miou"] - np.mean(ious)) < 1e-9
    assert r["memory_rows"] == 160 and r["index"] == "exact" and r["recall"] == 1.0
    assert r["miou"] > 0.5


def test_hummingbird_4d_features_hnsw_and_memory_budget():
    tf, tm = _data(2, 12)
    vf, vm = _data(3, 3)
    r = fe.hummingbird(tf.reshape(12, 4, 4, 8), tm, vf, vm, num_classes=3, k=5,
                       memory_size=120, index="hnsw", ef_search=32)
    assert r["patches_per_image"] == 10 and r["memory_rows"] == 120
    assert r["index"] == "hnsw" and 0.8 <= r["recall"] <= 1.0 and r["recall_queries"] == 48


def test_hummingbird_bad_inputs_are_named():
    tf, tm = _data(0, 4)
    vf, vm = _data(1, 2)
    with pytest.raises(ValueError, match="val_masks: 1 masks for the 2 images"):
        fe.hummingbird(tf, tm, vf, vm[:1], num_classes=3)
    bad = vm.copy()
    bad[0, 1, 1] = 7
    with pytest.raises(ValueError, match="class id 7"):
        fe.hummingbird(tf, tm, vf, bad, num_classes=3)
    with pytest.raises(ValueError, match="whole square patches"):
        fe.hummingbird(tf, tm, vf, vm[:, :15, :], num_classes=3)
    with pytest.raises(ValueError, match="not a square grid"):
        fe.hummingbird(tf[:, :15], tm, vf, vm, num_classes=3)
    with pytest.raises(ValueError, match="temperature = 0"):
        fe.hummingbird(tf, tm, vf, vm, num_classes=3, temperature=0.0)
    with pytest.raises(ValueError, match="k = 1000"):
        fe.hummingbird(tf, tm, vf, vm, num_classes=3, k=1000, index="exact")
    with pytest.raises(ValueError, match="index"):
        fe.hummingbird(tf, tm, vf, vm, num_classes=3, index="faiss")
    nan = vf.copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError):
        fe.hummingbird(tf, tm, nan, vm, num_classes=3)


def test_hummingbird_non_square_grid_matches_the_reference():
    tf, tm = _data(4, 8, grid=(2, 4))
    vf, vm = _data(5, 3, grid=(2, 4))
    r = fe.hummingbird(tf, tm, vf, vm, num_classes=3, k=4, temperature=0.1, grid=(2, 4),
                       memory_size=10_000, index="exact", return_predictions=True)
    want = _reference(tf, tm, vf, vm, (2, 4), 4, 0.1, 3)
    assert r["predictions"].shape == (3, 8, 16)
    assert (r["predictions"] == want).mean() > 0.999
    # The transposed grid is another layout: refused by its patch count only when it differs.
    with pytest.raises(ValueError, match="whole square patches"):
        fe.hummingbird(tf, tm, vf, vm.transpose(0, 2, 1), num_classes=3, grid=(2, 4))


def test_hummingbird_refuses_early_and_reports_what_it_measured():
    tf, tm = _data(0, 4)
    vf, vm = _data(1, 2)
    # k past the memory is refused before anything is computed, naming the budget.
    with pytest.raises(ValueError, match="k = 9: expected between 1 and the 8 rows"):
        fe.hummingbird(tf, tm, vf, vm, num_classes=3, k=9, memory_size=8)
    # Non-finite validation features are an error on every search.
    nan = vf.copy()
    nan[1, 3, 2] = np.inf
    for index in ("exact", "hnsw"):
        with pytest.raises(ValueError, match="non-finite"):
            fe.hummingbird(tf, tm, nan, vm, num_classes=3, k=4, index=index, ef_search=16)
    # Masks without pixels.
    with pytest.raises(ValueError, match="whole square patches"):
        fe.hummingbird(tf, tm, vf, vm[:, :0, :0], num_classes=3)
    # ef_search below k only matters for HNSW.
    r = fe.hummingbird(tf, tm, vf, vm, num_classes=3, k=20, ef_search=16, index="auto")
    assert r["index"] == "exact" and r["recall"] == 1.0
    with pytest.raises(ValueError, match="ef_search"):
        fe.hummingbird(tf, tm, vf, vm, num_classes=3, k=20, ef_search=16, index="hnsw")
    # An approximate search whose recall was not measured says so.
    r = fe.hummingbird(tf, tm, vf, vm, num_classes=3, k=4, index="hnsw", recall_queries=0)
    assert r["recall"] is None and r["recall_queries"] == 0
