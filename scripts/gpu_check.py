#!/usr/bin/env python3
"""The GPU check: one prepared call on the GPU machine (scripts/gpu-check.sh; docs/backends.md).

Standard library only. Reads what scripts/gpu-pack.sh prepared (default `.gpu/`), writes at most
three files to the output folder ($OUT on the device machine): `summary.json` (every step, the
parity errors, the bench rows and the fungi-rs / fungivision ratio table; rewritten after every
step), `logs.tgz` (every step's log and raw output) and `caches.tgz` (cubecl's compiled-kernel
and autotune caches, for the next call: `scripts/gpu-pack.sh --caches caches.tgz`). A step that
fails or times out never loses the others; steps run in order of value until the budget is spent:

  probe                 nvidia-smi, the CUDA folder / headers / NVRTC, the preflight, a tiny embed
  golden_embed_f32      `fungi embed` of the tiny golden model vs the float64 reference
  golden_extract_f32    `fungi extract` KL + SimCLR with fungivision's golden state vs its features
  vits16_extract_f32    ViT-S/16, synthetic weights, KL + DINO + SimCLR vs the CPU's features
  bench_<arch>_f32      `fungi bench` all three objectives (JSON lines: rows survive a timeout)
  fungivision_<arch>    fungivision 0.0.2: strict FP32, FP32 with TF32 allowed, use_fp16
  bench_<arch>_bf16     the same at --precision bf16
  *_bf16 parity         golden and ViT-S/16 at bf16: cosine to f32 and to the reference

Tolerances know TF32: cubecl runs f32 matmuls on tensor cores as TF32 (error ~3e-4), and cubecl
0.10 has no switch to force strict FP32 (docs/backends.md), so f32 parity gates on a relative
error ||ours - ref|| / ||ref|| <= 1e-3 per row and a cosine >= 0.9999; the golden JPEG rows
(decoder differences) on cosine >= 0.999 only. Every error is printed and kept.
"""
import argparse, json, lzma, math, os, pathlib, shutil, struct, subprocess, sys, tarfile, time

ROOT = pathlib.Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "fixtures" / "golden"
F32_REL, F32_COS, JPEG_COS, BF16_COS = 1e-3, 0.9999, 0.999, 0.99


# -- files ------------------------------------------------------------------------------------
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


# -- comparisons -------------------------------------------------------------------------------
def rows(v, d):
    return [v[i:i + d] for i in range(0, len(v), d)]


def norm(a):
    return math.sqrt(sum(x * x for x in a))


def cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / max(norm(a) * norm(b), 1e-30)


def compare(ours, ref, d, exact_rows=None):
    """Per-row relative error ||o - r|| / ||r|| (max over `exact_rows`, default all), max |o - r|
    there, and the min cosine over all rows."""
    o, r = rows(ours, d), rows(ref, d)
    if len(o) != len(r):
        raise ValueError(f"{len(o)} rows, expected {len(r)}")
    exact = range(len(o)) if exact_rows is None else exact_rows
    rel = [norm([x - y for x, y in zip(o[i], r[i])]) / max(norm(r[i]), 1e-30) for i in exact]
    return dict(max_rel_err=max(rel), max_abs_err=max(max(abs(x - y) for x, y in zip(o[i], r[i])) for i in exact),
                min_cosine=min(cos(a, b) for a, b in zip(o, r)))


def blocks_of(manifest):
    return [(b["name"], b["offset"], b["dim"]) for b in json.loads(pathlib.Path(manifest).read_text())["blocks"]]


def block_cols(v, d, offset, width):
    return [x for r in rows(v, d) for x in r[offset:offset + width]]


class Skip(Exception):
    pass


# -- the check ---------------------------------------------------------------------------------
class Check:
    def __init__(self, a):
        self.a = a
        self.out = pathlib.Path(a.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = pathlib.Path(a.work)
        shutil.rmtree(self.work, ignore_errors=True)
        (self.work / "logs").mkdir(parents=True)
        self.cache = self.work / "cubecl-cache"
        self.cache.mkdir()
        self.deadline = time.time() + a.budget
        self.pack = pathlib.Path(a.pack)
        self.summary = dict(started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), device=a.device,
                            archs=a.archs, batches=a.batches, precisions=a.precisions, steps={},
                            tolerances=dict(f32_rel=F32_REL, f32_cosine=F32_COS, jpeg_rows_cosine=JPEG_COS,
                                            bf16_cosine_to_f32=BF16_COS),
                            strict_fp32=("not available: cubecl 0.10 runs f32 matmuls as TF32 on sm_80+ "
                                         "with no switch (docs/backends.md); torch's strict and TF32 rows "
                                         "are both measured"))
        pj = self.pack / "pack.json"
        self.summary["pack"] = json.loads(pj.read_text()) if pj.exists() else None
        self.fungi_bin = self.unpack_binary()
        self.env = self.fungi_env()
        self.f32 = {}

    # set-up -----------------------------------------------------------------------------------
    def unpack_binary(self):
        xz = self.pack / "fungi.xz"
        if not xz.exists():
            raise SystemExit(f"{xz} is missing: run scripts/gpu-pack.sh on the CPU machine first")
        dst = self.work / "bin" / "fungi"
        dst.parent.mkdir()
        with lzma.open(xz) as f:
            dst.write_bytes(f.read())
        dst.chmod(0o755)
        caches = self.pack / "caches.tgz"
        if caches.exists():  # compiled kernels and autotune results of an earlier call
            with tarfile.open(caches) as t:
                t.extractall(self.cache)
        return dst

    def cuda_dirs(self):
        """The CUDA toolkit folder (headers for NVRTC) and the library folders for the loader."""
        libs, include_roots = [], []
        for d in [os.environ.get("CUDA_PATH"), "/usr/local/cuda", *sorted(map(str, pathlib.Path("/usr/local").glob("cuda-*"))), "/opt/cuda"]:
            if d and pathlib.Path(d, "include", "cuda_runtime.h").is_file():
                include_roots.append(pathlib.Path(d))
            for sub in ("lib64", "lib", "targets/x86_64-linux/lib"):
                if d and pathlib.Path(d, sub).is_dir():
                    libs.append(str(pathlib.Path(d, sub)))
        # pip's NVIDIA wheels (torch's): nvidia/<pkg>/lib and nvidia/cu13/lib.
        try:
            p = subprocess.run([self.a.python, "-c", "import nvidia, os; print(os.pathsep.join(nvidia.__path__))"],
                               capture_output=True, text=True, timeout=60).stdout.strip()
        except Exception:
            p = ""
        pip_includes = []
        for root in filter(None, p.split(os.pathsep)):
            for lib in sorted(pathlib.Path(root).glob("*/lib")):
                libs.append(str(lib))
            pip_includes += sorted(pathlib.Path(root).glob("*/include"))
        libs += [d for d in ("/usr/local/nvidia/lib64", "/usr/lib/x86_64-linux-gnu") if pathlib.Path(d).is_dir()]
        cuda_path = include_roots[0] if include_roots else None
        if cuda_path is None and pip_includes:
            # Only pip's wheels: one folder whose include/ holds every wheel's headers.
            merged = self.work / "cuda"
            inc = merged / "include"
            inc.mkdir(parents=True, exist_ok=True)
            for d in pip_includes:
                for h in d.iterdir():
                    if not (inc / h.name).exists():
                        (inc / h.name).symlink_to(h)
            if (inc / "cuda_runtime.h").exists():
                cuda_path = merged
        return cuda_path, libs

    def fungi_env(self):
        """LD_LIBRARY_PATH and CUDA_PATH for the fungi processes only (torch keeps its own)."""
        env = dict(os.environ)
        if self.a.device.startswith("cuda"):
            cuda_path, libs = self.cuda_dirs()
            if cuda_path is not None:
                env["CUDA_PATH"] = str(cuda_path)
            env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + [env.get("LD_LIBRARY_PATH", "")]).strip(os.pathsep)
            self.summary["cuda_path"] = str(cuda_path)
            self.summary["ld_library_path"] = env["LD_LIBRARY_PATH"]
        env.setdefault("FUNGI_LOG", "info")
        return env

    def step_dir(self, name, autotune):
        """A working folder whose cubecl.toml points the caches at the shared cache folder
        (cubecl reads cubecl.toml from the current directory upwards)."""
        d = self.work / "steps" / name
        d.mkdir(parents=True, exist_ok=True)
        c = self.cache.resolve()
        (d / "cubecl.toml").write_text(
            f'[compilation]\ncache = {{ file = "{c}" }}\n\n'
            f'[autotune]\nlevel = "{autotune}"\ncache = {{ file = "{c}" }}\n')
        return d

    # bookkeeping ------------------------------------------------------------------------------
    def save(self):
        self.summary["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.summary["ratios"] = self.ratios()
        tmp = self.out / "summary.json.tmp"
        tmp.write_text(json.dumps(self.summary, indent=2))
        tmp.replace(self.out / "summary.json")
        for name, src in (("logs.tgz", self.work / "logs"), ("caches.tgz", self.cache)):
            tmp = self.out / (name + ".tmp")
            with tarfile.open(tmp, "w:gz") as t:
                for p in sorted(src.rglob("*")):
                    if p.is_file():
                        t.add(p, arcname=str(p.relative_to(src)))
            tmp.replace(self.out / name)

    def run(self, cmd, log, timeout, env=None, cwd=None):
        with open(self.work / "logs" / log, "a") as f:
            f.write("$ " + " ".join(map(str, cmd)) + "\n")
            f.flush()
            t = time.time()
            try:
                p = subprocess.run(list(map(str, cmd)), stdout=subprocess.PIPE, stderr=f, text=True,
                                   timeout=timeout, env=env or self.env, cwd=cwd)
            except subprocess.TimeoutExpired as e:
                out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
                f.write(out + f"\n[timed out after {timeout:.0f} s]\n")
                raise TimeoutError(f"timed out after {timeout:.0f} s: see logs/{log}") from None
            f.write(p.stdout + f"\n[exit {p.returncode} after {time.time() - t:.1f} s]\n")
        if p.returncode != 0:
            raise RuntimeError(f"exit {p.returncode}: see logs/{log}")
        return p.stdout

    def step(self, name, fn, timeout):
        if any(name.startswith(s) for s in self.a.skip):
            self.summary["steps"][name] = dict(status="skipped", reason="--skip")
            return self.save()
        left = self.deadline - time.time()
        if left < 15:
            self.summary["steps"][name] = dict(status="skipped", reason="time budget spent")
            print(f"[skip] {name}: time budget spent", flush=True)
            return self.save()
        t = time.time()
        try:
            r = fn(min(timeout, left)) or {}
            status = "failed" if r.get("pass") is False else "ok"
            self.summary["steps"][name] = dict(status=status, seconds=round(time.time() - t, 1), **r)
            print(f"[{status}] {name} ({time.time() - t:.0f} s): {json.dumps(r)[:600]}", flush=True)
        except Exception as e:
            status = "skipped" if isinstance(e, Skip) else "failed"
            self.summary["steps"][name] = dict(status=status, seconds=round(time.time() - t, 1),
                                               error=f"{type(e).__name__}: {e}")
            print(f"[{status}] {name}: {e}", flush=True)
        self.save()

    def fungi(self, *args, precision="f32"):
        return [self.fungi_bin, "--device", self.a.device, "--precision", precision, *args]

    # steps ------------------------------------------------------------------------------------
    def probe(self, timeout):
        r = {}
        try:
            r["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,memory.total,driver_version,compute_cap", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20).stdout.strip()
        except Exception as e:
            r["nvidia_smi"] = f"unavailable ({type(e).__name__})"
        cp = self.env.get("CUDA_PATH")
        if cp:
            inc = pathlib.Path(cp, "include")
            r["headers"] = {h: (inc / h).exists() for h in ("cuda_runtime.h", "cuda_fp16.h", "cuda_bf16.h", "mma.h",
                                                              "cuda/pipeline", "cooperative_groups.h")}
        for py_mod in ("torch", "timm"):
            try:
                r[py_mod] = subprocess.run([self.a.python, "-c", f"import {py_mod}; print({py_mod}.__version__)"],
                                           capture_output=True, text=True, timeout=120).stdout.strip() or "missing"
            except Exception as e:
                r[py_mod] = f"unavailable ({type(e).__name__})"
        try:
            r["cpu"] = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
        except (OSError, StopIteration):
            r["cpu"] = "unknown"
        out = self.work / "probe.npy"
        t = time.time()
        self.run(self.fungi("embed", "--weights", GOLDEN / "model.safetensors", "--arch", GOLDEN / "model.json",
                            "--images", GOLDEN / "images", "--out", out), "probe.log", timeout,
                 cwd=self.step_dir("probe", "minimal"))
        r["first_embed_seconds"] = round(time.time() - t, 1)
        log = (self.work / "logs" / "probe.log").read_text()
        r["preflight"] = next((l.split("INFO", 1)[-1].strip() for l in log.splitlines() if "CUDA driver" in l), None)
        shape, _ = npy_read(out)
        r["embed_shape"] = list(shape)
        self.summary["environment"] = r
        return r

    def golden_embed(self, timeout):
        out = self.work / "golden_embed.npy"
        self.run(self.fungi("embed", "--weights", GOLDEN / "model.safetensors", "--arch", GOLDEN / "model.json",
                            "--images", GOLDEN / "images", "--out", out), "golden_embed_f32.log", timeout,
                 cwd=self.step_dir("golden", "minimal"))
        shape, ours = npy_read(out)
        t, _ = st_read(GOLDEN / "eval.safetensors")
        ref = floats("F64", t["embeddings_f64"][2])
        # rows 0 and 7 are JPEGs: Pillow's libjpeg-turbo vs the image crate (docs/parity.md)
        r = compare(ours, ref, shape[1], exact_rows=[1, 2, 3, 4, 5, 6])
        r["min_cosine_jpeg_rows"] = compare(ours, ref, shape[1])["min_cosine"]
        r["pass"] = r["max_rel_err"] <= F32_REL and r["min_cosine"] >= JPEG_COS
        return r

    def golden_extract(self, precision, timeout):
        work = self.work
        write_golden_state(GOLDEN, work / "golden_state.safetensors")
        (work / "golden.toml").write_text(
            'target_layer = "blocks.3.attn.proj"\nbatch_size = 4\ninclude_embedding = false\n'
            '[[objective]]\ntype = "kl"\n[[objective]]\ntype = "simclr"\n')
        out = work / f"golden_extract_{precision}"
        shutil.rmtree(out, ignore_errors=True)
        self.run(self.fungi("extract", "--weights", GOLDEN / "model.safetensors", "--arch", GOLDEN / "model.json",
                            "--images", GOLDEN / "images", "--config", work / "golden.toml",
                            "--state", work / "golden_state.safetensors", "--out", out, precision=precision),
                 f"golden_extract_{precision}.log", timeout, cwd=self.step_dir("golden", "minimal"))
        shape, ours = npy_read(out / "features.npy")
        if shape != (8, 128):
            raise ValueError(f"features.npy has shape {shape}, expected (8, 128)")
        kl, _ = st_read(GOLDEN / "kl.safetensors")
        sim, _ = st_read(GOLDEN / "simclr.safetensors")
        ref = {"kl": floats("F64", kl["features_f64"][2]), "simclr": floats("F64", sim["features_f64"][2])}
        r = {}
        for b, name in [(0, "kl"), (1, "simclr")]:
            o = block_cols(ours, 128, b * 64, 64)
            r[name] = compare(o, ref[name], 64, exact_rows=[1, 2, 3, 4, 5, 6])
            r[name]["min_cosine_jpeg_rows"] = compare(o, ref[name], 64)["min_cosine"]
            if precision != "f32" and "golden" in self.f32:
                r[name]["min_cosine_to_f32"] = compare(o, block_cols(self.f32["golden"], 128, b * 64, 64), 64)["min_cosine"]
        if precision == "f32":
            self.f32["golden"] = ours
            r["pass"] = all(r[k]["max_rel_err"] <= F32_REL and r[k]["min_cosine"] >= JPEG_COS for k in ("kl", "simclr"))
        else:
            r["pass"] = all(r[k].get("min_cosine_to_f32", 1.0) >= BF16_COS for k in ("kl", "simclr"))
        return r

    def vits16_extract(self, precision, timeout):
        ref_npy, state = self.pack / "vits16_features.npy", self.pack / "vits16_state.safetensors"
        if not (ref_npy.exists() and state.exists()):
            raise Skip("no vits16 reference in the pack (scripts/gpu-pack.sh makes it)")
        weights = self.work / "vits16.safetensors"
        cwd = self.step_dir("vits16", "minimal")
        if not weights.exists():
            self.run([self.fungi_bin, "synthetic-weights", "--arch", "dino_vits16", "--seed", "0", "--out", weights],
                     f"vits16_extract_{precision}.log", 60)
        out = self.work / f"vits16_extract_{precision}"
        shutil.rmtree(out, ignore_errors=True)
        self.run(self.fungi("extract", "--weights", weights, "--arch", "dino_vits16", "--images", GOLDEN / "images",
                            "--config", ROOT / "scripts" / "gpu-parity.toml", "--state", state, "--out", out,
                            precision=precision), f"vits16_extract_{precision}.log", timeout, cwd=cwd)
        shape, ours = npy_read(out / "features.npy")
        rshape, ref = npy_read(ref_npy)
        if shape != rshape:
            raise ValueError(f"features.npy has shape {shape}, the reference {rshape}")
        d = shape[1]
        r = {}
        for name, off, width in blocks_of(out / "manifest.json"):
            r[name] = compare(block_cols(ours, d, off, width), block_cols(ref, d, off, width), width)
        if precision == "f32":
            self.f32["vits16"] = ours
            r["pass"] = all(v["max_rel_err"] <= F32_REL and v["min_cosine"] >= F32_COS for v in r.values())
        else:
            for name, off, width in blocks_of(out / "manifest.json"):
                if "vits16" in self.f32:
                    r[name]["min_cosine_to_f32"] = compare(block_cols(ours, d, off, width),
                                                           block_cols(self.f32["vits16"], d, off, width), width)["min_cosine"]
            r["pass"] = all(v.get("min_cosine_to_f32", 1.0) >= BF16_COS for v in r.values() if isinstance(v, dict))
        return r

    def bench(self, arch, precision, timeout):
        log = f"bench_{arch}_{precision}.log"
        try:
            out = self.run(self.fungi("bench", "--arch", arch, "--objectives", "kl,dino,simclr", "--batch",
                                      self.a.batches, "--iters", self.a.iters, "--json", precision=precision),
                           log, timeout, cwd=self.step_dir("bench", "balanced"))
        except TimeoutError:
            out = (self.work / "logs" / log).read_text()
        rows = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
        if not rows:
            raise RuntimeError(f"no rows: see logs/{log}")
        return dict(rows=rows)

    def fungivision(self, arch, timeout):
        py, env = self.a.python, dict(os.environ)
        probe = subprocess.run([py, "-c", "import fungivision, timm, torch"], capture_output=True, text=True)
        if probe.returncode != 0:
            wheels = sorted((self.pack / "wheels").glob("fungivision-*.whl"))
            if not wheels:
                raise Skip("fungivision/timm/torch not importable and no wheel in the pack: "
                           + (probe.stderr.strip().splitlines() or ["?"])[-1])
            target = self.work / "pydeps"
            self.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", target, wheels[0]],
                     "fungivision_install.log", 120, env=env)
            env["PYTHONPATH"] = f"{target}{os.pathsep}{env.get('PYTHONPATH', '')}"
        cuda = self.a.device.startswith("cuda")
        js = self.work / "logs" / f"fungivision_{arch}.jsonl"
        js.unlink(missing_ok=True)
        try:
            self.run([py, ROOT / "tests" / "scripts" / "bench_fungivision.py", "all", self.a.batches, arch,
                      "--device", "cuda" if cuda else "cpu", "--fp16", "0,1" if cuda else "0",
                      "--tf32", "0,1" if cuda else "0", "--iters", self.a.iters, "--jsonl", js],
                     f"fungivision_{arch}.log", timeout, env=env)
        except TimeoutError:
            pass  # the rows written so far are kept
        rows = [json.loads(l) for l in js.read_text().splitlines()] if js.exists() else []
        if not rows:
            raise RuntimeError(f"no rows: see logs/fungivision_{arch}.log")
        return dict(rows=rows)

    # the table --------------------------------------------------------------------------------
    def ratios(self):
        """fungi-rs images/s over fungivision's, per arch and batch: f32 against strict FP32 and
        against TF32, bf16 against use_fp16."""
        out = []
        steps = self.summary["steps"]
        for arch in self.a.archs.split(","):
            fv = steps.get(f"fungivision_{arch}", {}).get("rows", [])
            for prec in ("f32", "bf16"):
                for row in steps.get(f"bench_{arch}_{prec}", {}).get("rows", []):
                    b = row["batch"]
                    def fv_rate(fp16, tf32):
                        m = [x["images_per_s"] for x in fv if x["batch"] == b and x["use_fp16"] == fp16
                             and x.get("tf32", False) == tf32]
                        return m[0] if m else None
                    pairs = ([("fungivision_f32_strict", fv_rate(False, False)), ("fungivision_f32_tf32", fv_rate(False, True))]
                             if prec == "f32" else [("fungivision_fp16", fv_rate(True, False)), ("fungivision_fp16_tf32", fv_rate(True, True))])
                    for name, rate in pairs:
                        if rate:
                            out.append(dict(arch=arch, batch=b, fungi_rs=prec, against=name,
                                            fungi_rs_images_per_s=round(row["images_per_s"], 3),
                                            fungivision_images_per_s=round(rate, 3),
                                            ratio=round(row["images_per_s"] / rate, 3)))
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pack", default=str(ROOT / ".gpu"), help="what scripts/gpu-pack.sh made")
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu-out",
                    help="summary.json, logs.tgz, caches.tgz (default $OUT)")
    ap.add_argument("--work", default=None, help="scratch folder (default /tmp/fungi-gpu-check)")
    ap.add_argument("--device", default="cuda", help="cuda[:N], or flex for the CPU rehearsal")
    ap.add_argument("--archs", default="dino_vitb16,dino_vits16", help="in order of value")
    ap.add_argument("--batches", default="64")
    ap.add_argument("--precisions", default=None, help="default f32,bf16 on cuda, f32 elsewhere")
    ap.add_argument("--iters", default="2")
    ap.add_argument("--python", default=sys.executable, help="the Python with torch + timm for fungivision")
    ap.add_argument("--budget", type=float, default=330, help="seconds for all steps; later steps are skipped")
    ap.add_argument("--skip", default="", help="comma-separated step-name prefixes to skip")
    a = ap.parse_args()
    a.work = a.work or "/tmp/fungi-gpu-check"
    a.precisions = (a.precisions or ("f32,bf16" if a.device.startswith("cuda") else "f32")).split(",")
    a.skip = [s for s in a.skip.split(",") if s]
    c = Check(a)
    archs = a.archs.split(",")
    bf16 = "bf16" in a.precisions
    c.step("probe", c.probe, 150)
    c.step("golden_embed_f32", c.golden_embed, 60)
    c.step("golden_extract_f32", lambda t: c.golden_extract("f32", t), 60)
    c.step("vits16_extract_f32", lambda t: c.vits16_extract("f32", t), 120)
    first, rest = archs[0], archs[1:]
    c.step(f"bench_{first}_f32", lambda t: c.bench(first, "f32", t), 150)
    c.step(f"fungivision_{first}", lambda t: c.fungivision(first, t), 200)
    if bf16:
        c.step(f"bench_{first}_bf16", lambda t: c.bench(first, "bf16", t), 120)
        c.step("golden_extract_bf16", lambda t: c.golden_extract("bf16", t), 60)
        c.step("vits16_extract_bf16", lambda t: c.vits16_extract("bf16", t), 90)
    for arch in rest:
        c.step(f"bench_{arch}_f32", lambda t, arch=arch: c.bench(arch, "f32", t), 120)
        c.step(f"fungivision_{arch}", lambda t, arch=arch: c.fungivision(arch, t), 150)
        if bf16:
            c.step(f"bench_{arch}_bf16", lambda t, arch=arch: c.bench(arch, "bf16", t), 90)
    c.save()
    print("ratios (fungi-rs / fungivision, images/s):")
    for r in c.summary["ratios"]:
        print(f"  {r['arch']:<12} b{r['batch']:<4} {r['fungi_rs']:<5} vs {r['against']:<22} "
              f"{r['fungi_rs_images_per_s']:>9.3f} / {r['fungivision_images_per_s']:>9.3f} = {r['ratio']:.2f}x")
    failed = [k for k, v in c.summary["steps"].items() if v["status"] == "failed"]
    print(f"summary: {c.out / 'summary.json'}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
