#!/usr/bin/env python3
"""The GPU check's steps (driven by scripts/gpu-check.sh; see docs/backends.md).

Standard library only (the GPU machine's Python has torch; nothing else is assumed for the parity
steps). Every step runs on its own with a timeout and records ok / failed / skipped with its log,
so one failure never loses the others; the summary is rewritten after every step.

Steps:
  embed         `fungi embed` on the golden images vs the golden eval embeddings
  extract_f32   `fungi extract` with a golden state (KL + SimCLR) vs fungivision's features
  extract_bf16  the same at --precision bf16: cosine to the f32 run and to the golden features
  bench_*       `fungi bench --json` per arch and precision (kl,dino,simclr)
  fungivision_* fungivision 0.0.2 on the same device, use_fp16 False/True, same batches
"""
import argparse, json, math, os, pathlib, shutil, struct, subprocess, sys, time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def st_read(path):
    """safetensors -> {name: (dtype, shape, bytes)}, metadata."""
    b = pathlib.Path(path).read_bytes()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    meta = h.pop("__metadata__", {})
    base = 8 + n
    return {k: (v["dtype"], v["shape"], b[base + v["data_offsets"][0]:base + v["data_offsets"][1]])
            for k, v in h.items()}, meta


def st_write(path, tensors, meta):
    header, off, blobs = {}, 0, []
    for k in sorted(tensors):
        dt, shape, data = tensors[k]
        header[k] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
        blobs.append(data)
    header["__metadata__"] = meta
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    pathlib.Path(path).write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def floats(dtype, data):
    fmt = {"F32": "f", "F64": "d"}[dtype]
    return list(struct.unpack(f"<{len(data) // struct.calcsize(fmt)}{fmt}", data))


def npy_read(path):
    b = pathlib.Path(path).read_bytes()
    if b[:6] != b"\x93NUMPY":
        raise ValueError(f"{path}: not a .npy file")
    major = b[6]
    hl = struct.unpack("<H" if major == 1 else "<I", b[8:10] if major == 1 else b[8:12])[0]
    start = (10 if major == 1 else 12) + hl
    header = b[start - hl:start].decode()
    if "'<f4'" not in header:
        raise ValueError(f"{path}: expected little-endian float32, header {header.strip()}")
    shape = tuple(int(x) for x in header.split("'shape': (")[1].split(")")[0].split(",") if x.strip())
    return shape, floats("F32", b[start:])


def rows(v, d):
    return [v[i:i + d] for i in range(0, len(v), d)]


def cos(a, b):
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(x * x for x in b))
    return sum(x * y for x, y in zip(a, b)) / max(na * nb, 1e-30)


def compare(ours, ref, d, exact_rows):
    """max |diff| over `exact_rows`, max relative |diff| (to the row's max |ref|) there, min cosine
    over all rows."""
    o, r = rows(ours, d), rows(ref, d)
    if len(o) != len(r):
        raise ValueError(f"{len(o)} rows, expected {len(r)}")
    max_abs = max(max(abs(x - y) for x, y in zip(o[i], r[i])) for i in exact_rows)
    max_rel = max(max(abs(x - y) for x, y in zip(o[i], r[i])) / max(max(abs(y) for y in r[i]), 1e-30)
                  for i in exact_rows)
    return dict(max_abs_exact_rows=max_abs, max_rel_exact_rows=max_rel,
                min_cosine_all_rows=min(cos(a, b) for a, b in zip(o, r)))


def write_golden_state(golden, path):
    """A fungi state file made of fungivision's golden heads, projection and SimCLR comparison
    batch (KL + SimCLR on `blocks.3.attn.proj`), as crates/fungi-cli/tests/extract.rs builds it."""
    w, _ = st_read(golden / "wrapper.safetensors")
    kl, _ = st_read(golden / "kl.safetensors")
    sim, _ = st_read(golden / "simclr.safetensors")
    tensors = {"projection": w["projection_i8"], "projection_scaling": w["projection_scaling"],
               "kl.head.weight": kl["head.weight"], "kl.head.bias": kl["head.bias"],
               "simclr.head.weight": sim["head.weight"], "simclr.head.bias": sim["head.bias"],
               "simclr.negatives": sim["comparison_latents"]}
    cfg = {"target_layer": "blocks.3.attn.proj", "target_shape": [64, 64], "embed_dim": 64,
           "objectives": [{"name": "kl"}, {"name": "simclr"}]}
    st_write(path, tensors, {"format": "fungi-state/1", "config": json.dumps(cfg)})


class Check:
    def __init__(self, a):
        self.a, self.out = a, pathlib.Path(a.out)
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        (self.out / "work").mkdir(parents=True, exist_ok=True)
        self.deadline = time.time() + a.budget
        self.summary = dict(started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), device=a.device,
                            fungi=str(a.fungi), batches=a.batches, archs=a.archs, precisions=a.precisions,
                            host=os.uname().nodename, steps={})
        self.gpu_info()

    def gpu_info(self):
        try:
            self.summary["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20).stdout.strip()
        except Exception as e:  # no GPU tools on a CPU machine
            self.summary["nvidia_smi"] = f"unavailable ({type(e).__name__})"
        try:
            cpu = [l for l in open("/proc/cpuinfo") if l.startswith("model name")]
            self.summary["cpu"] = cpu[0].split(":", 1)[1].strip() if cpu else "unknown"
        except OSError:
            self.summary["cpu"] = "unknown"

    def save(self):
        self.summary["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        (self.out / "summary.json").write_text(json.dumps(self.summary, indent=2))

    def run(self, cmd, log, timeout, env=None):
        with open(self.out / "logs" / log, "a") as f:
            f.write("$ " + " ".join(map(str, cmd)) + "\n")
            f.flush()
            p = subprocess.run(list(map(str, cmd)), stdout=subprocess.PIPE, stderr=f, text=True,
                               timeout=timeout, env=env)
            f.write(p.stdout)
        if p.returncode != 0:
            raise RuntimeError(f"exit {p.returncode}: see logs/{log}")
        return p.stdout

    def step(self, name, fn, timeout):
        left = self.deadline - time.time()
        if left < 10:
            self.summary["steps"][name] = dict(status="skipped", reason="time budget spent")
            print(f"[skip] {name}: time budget spent", flush=True)
            self.save()
            return
        t = time.time()
        try:
            r = fn(min(timeout, left)) or {}
            # A parity step that ran but missed its tolerance is a failure (numbers kept).
            status = "failed" if r.get("pass") is False else "ok"
            self.summary["steps"][name] = dict(status=status, seconds=round(time.time() - t, 1), **r)
            print(f"[{status}] {name} ({time.time() - t:.0f} s): {json.dumps(r)[:400]}", flush=True)
        except Exception as e:
            status = "skipped" if isinstance(e, Skip) else "failed"
            self.summary["steps"][name] = dict(status=status, seconds=round(time.time() - t, 1),
                                               error=f"{type(e).__name__}: {e}")
            print(f"[{status}] {name}: {e}", flush=True)
        self.save()

    def fungi(self, *args, precision="f32"):
        return [self.a.fungi, "--device", self.a.device, "--precision", precision, *args]

    # (a) golden parity -----------------------------------------------------------------------
    def embed(self, timeout):
        g = self.a.golden
        out = self.out / "work" / "embed.npy"
        self.run(self.fungi("embed", "--weights", g / "model.safetensors", "--arch", g / "model.json",
                            "--images", g / "images", "--out", out), "embed.log", timeout)
        shape, ours = npy_read(out)
        t, _ = st_read(g / "eval.safetensors")
        ref = floats("F64", t["embeddings_f64"][2])
        # JPEG rows (0, 7) depend on the JPEG decoder (Pillow's libjpeg-turbo vs the image crate).
        r = compare(ours, ref, shape[1], exact_rows=[1, 2, 3, 4, 5, 6])
        r["tolerance"] = "PNG rows rel <= 1e-4 (golden README), all rows cosine >= 0.999"
        r["pass"] = r["max_rel_exact_rows"] <= 1e-4 and r["min_cosine_all_rows"] >= 0.999
        return r

    def golden_state(self):
        g = self.a.golden
        work = self.out / "work"
        write_golden_state(g, work / "golden_state.safetensors")
        kl, _ = st_read(g / "kl.safetensors")
        sim, _ = st_read(g / "simclr.safetensors")
        (work / "golden.toml").write_text(
            'target_layer = "blocks.3.attn.proj"\nbatch_size = 4\ninclude_embedding = false\n'
            '[[objective]]\ntype = "kl"\n[[objective]]\ntype = "simclr"\n')
        ref = []
        kf = floats("F64", kl["features_f64"][2])
        sf = floats("F64", sim["features_f64"][2])
        for i in range(8):
            ref += kf[i * 64:(i + 1) * 64] + sf[i * 64:(i + 1) * 64]
        return ref

    def extract(self, precision, timeout):
        g = self.a.golden
        ref = self.golden_state()
        work = self.out / "work"
        out = work / f"extract_{precision}"
        shutil.rmtree(out, ignore_errors=True)
        self.run(self.fungi("extract", "--weights", g / "model.safetensors", "--arch", g / "model.json",
                            "--images", g / "images", "--config", work / "golden.toml",
                            "--state", work / "golden_state.safetensors", "--out", out, precision=precision),
                 f"extract_{precision}.log", timeout)
        shape, ours = npy_read(out / "features.npy")
        if shape != (8, 128):
            raise ValueError(f"features.npy has shape {shape}, expected (8, 128)")
        r = {}
        for b, name in [(0, "kl"), (1, "simclr")]:
            o = [x for i in range(8) for x in ours[i * 128 + b * 64:i * 128 + b * 64 + 64]]
            want = [x for i in range(8) for x in ref[i * 128 + b * 64:i * 128 + b * 64 + 64]]
            r[name] = compare(o, want, 64, exact_rows=[1, 2, 3, 4, 5, 6])
        return r, ours

    def extract_f32(self, timeout):
        r, ours = self.extract("f32", timeout)
        self.f32_features = ours
        r["tolerance"] = "PNG rows abs <= 1e-4, all rows cosine >= 0.999 (golden README)"
        r["pass"] = all(r[k]["max_abs_exact_rows"] <= 1e-4 and r[k]["min_cosine_all_rows"] >= 0.999
                        for k in ("kl", "simclr"))
        return r

    def extract_bf16(self, timeout):
        if "bf16" not in self.a.precisions:
            raise Skip("bf16 not in --precisions")
        r, ours = self.extract("bf16", timeout)
        base = getattr(self, "f32_features", None)
        if base is not None:
            r["cosine_to_f32"] = {name: min(cos(ours[i * 128 + b * 64:i * 128 + b * 64 + 64],
                                                base[i * 128 + b * 64:i * 128 + b * 64 + 64]) for i in range(8))
                                  for b, name in [(0, "kl"), (1, "simclr")]}
        return r

    # (c) fungi bench --------------------------------------------------------------------------
    def bench(self, arch, precision, timeout):
        out = self.run(self.fungi("bench", "--arch", arch, "--objectives", "kl,dino,simclr", "--batch",
                                  self.a.batches, "--iters", self.a.iters, "--json", precision=precision),
                       f"bench_{arch}_{precision}.log", timeout)
        return json.loads(out)

    # (d) fungivision on the same device -------------------------------------------------------
    def fungivision(self, arch, timeout):
        env = dict(os.environ)
        py = self.a.python
        probe = subprocess.run([py, "-c", "import fungivision, timm, torch"], capture_output=True, text=True)
        if probe.returncode != 0:
            if not self.a.fungivision_wheel:
                raise Skip("fungivision/timm/torch not importable and no --fungivision-wheel: "
                           + probe.stderr.strip().splitlines()[-1])
            target = self.out / "work" / "pydeps"
            self.run([py, "-m", "pip", "install", "--no-deps", "--no-index", "--target", target,
                      self.a.fungivision_wheel], "fungivision_install.log", 120)
            env["PYTHONPATH"] = f"{target}:{env.get('PYTHONPATH', '')}"
        fv_dev = "cuda" if self.a.device.startswith("cuda") else "cpu"
        fp16 = "0,1" if fv_dev == "cuda" else "0"
        js = self.out / "work" / f"fungivision_{arch}.json"
        self.run([py, ROOT / "tests" / "scripts" / "bench_fungivision.py", "all", self.a.batches, arch,
                  "--device", fv_dev, "--fp16", fp16, "--iters", self.a.iters, "--json", js],
                 f"fungivision_{arch}.log", timeout, env=env)
        return json.loads(js.read_text())


class Skip(Exception):
    pass


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fungi", type=pathlib.Path, required=True, help="the prebuilt fungi binary")
    ap.add_argument("--out", required=True, help="output folder: summary.json, logs/, work/")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--golden", type=pathlib.Path, default=ROOT / "tests" / "fixtures" / "golden")
    ap.add_argument("--batches", default="16,64")
    ap.add_argument("--archs", default="dino_vits16,dino_vitb16")
    ap.add_argument("--precisions", default=None, help="default f32,bf16 on cuda, f32 elsewhere")
    ap.add_argument("--iters", default="2")
    ap.add_argument("--python", default=sys.executable, help="the Python with torch (+ timm) for fungivision")
    ap.add_argument("--fungivision-wheel", default=None)
    ap.add_argument("--budget", type=float, default=450, help="seconds for all steps; later steps are skipped")
    ap.add_argument("--skip", default="", help="comma-separated step-name prefixes to skip")
    a = ap.parse_args()
    if a.precisions is None:
        a.precisions = "f32,bf16" if a.device.startswith("cuda") else "f32"
    a.precisions = a.precisions.split(",")
    c = Check(a)
    skip = [s for s in a.skip.split(",") if s]

    def step(name, fn, timeout):
        if any(name.startswith(s) for s in skip):
            c.summary["steps"][name] = dict(status="skipped", reason="--skip")
            c.save()
            return
        c.step(name, fn, timeout)

    step("embed", c.embed, 120)
    step("extract_f32", c.extract_f32, 120)
    step("extract_bf16", c.extract_bf16, 120)
    archs = a.archs.split(",")
    # Interleaved so that a spent budget still leaves a like-for-like pair per arch.
    for arch in archs:
        step(f"bench_{arch}_f32", lambda t, arch=arch: c.bench(arch, "f32", t), 240)
        step(f"fungivision_{arch}", lambda t, arch=arch: c.fungivision(arch, t), 240)
    for arch in archs:
        for p in a.precisions:
            if p != "f32":
                step(f"bench_{arch}_{p}", lambda t, arch=arch, p=p: c.bench(arch, p, t), 240)
    c.save()
    failed = [k for k, v in c.summary["steps"].items() if v["status"] == "failed"]
    print(f"summary: {c.out / 'summary.json'}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
