"""python training/embedding_probe.py AISFX_DIR [C]: does a pretrained sound-effects embedding
(aisfx, MIT, weights in its wheel) with a linear probe hear unseen drones better, leave one
drone out, at 1 false alarm an hour? An experiment for a teacher, kept in history, not shipped.

Per clip: 2.32-s blocks (aisfx's 100 frames at 44.1 kHz, hop 1024) every 1 s, each block peak
normalised (aisfx normalises per file; its files are short effects). Per fold: logistic
regression on the training clips' blocks (drones equal by make, negatives by pool weight), then
the held-out items as heldout.py cuts them (level 0 only), decision: 2-block mean, open on 1.
AISFX_DIR: the aisfx 0.1.2 wheel unpacked (`pip download --no-deps aisfx==0.1.2`, then unzip;
its pinned numpy and librosa are not needed: only its network file and weights are read). C:
the probe's inverse regularisation (0.05). Embeddings are cached in runs/teacher_emb.pkl.
"""
import importlib.util  # noqa: E402
import pickle
import sys
import time
from pathlib import Path

import librosa  # noqa: E402
import numpy as np
import soxr
import torch

_spec = importlib.util.spec_from_file_location("cnn2d", f"{sys.argv[1]}/aisfx/models/cnn2d.py")
cnn2d = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cnn2d)
CrossNet, EmbeddingNet = cnn2d.CrossNet, cnn2d.EmbeddingNet

from nightear.decision import DecisionConfig  # noqa: E402
from nightear_training.augment import BACKGROUND_POOL_WEIGHTS  # noqa: E402
from nightear_training.data import ALL_SOURCES, AMBIENCE, EXCLUDED, load_clips  # noqa: E402
from nightear_training.heldout import (  # noqa: E402
    ESC50_OUTDOOR,
    FOLDS,
    MIN_RECORDING_SECONDS,
    NOT_FIELD_AMBIENCE,
    held_out,
)
from nightear_training.recipe import Recipe, load_bank  # noqa: E402

SR, N_FFT, HOP, BLOCK = 44100, 2048, 1024, 100
BLOCK_16K = int(np.ceil((BLOCK - 1) * HOP * 16000 / SR))  # 16-kHz samples for 100 frames
STEP_16K = 16000  # a block every second
torch.set_num_threads(2)
weights, ds = torch.load(f"{sys.argv[1]}/aisfx/models/checkpoint.pth", map_location="cpu", weights_only=False)
net = CrossNet(EmbeddingNet("max", 3, 1, 64), ds, "cpu")
net.load_state_dict(weights)
net.eval()
FB = librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=96, fmin=0.0, fmax=22050.0, htk=True, norm=1.0)


def block_spec(y16: np.ndarray) -> np.ndarray:
    y = soxr.resample(y16.astype(np.float64), 16000, SR)
    m = np.abs(y).max()
    y = y / m if m > 0 else y
    s = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP, win_length=N_FFT)) ** 2
    mel = np.log10(FB @ s * 10000.0 + 1.0) / 9.457798957824707
    mel = mel.T[:BLOCK]
    if len(mel) < BLOCK:
        mel = np.concatenate([mel, np.zeros((BLOCK - len(mel), 96))])
    return mel.astype(np.float32)


def embed(y16: np.ndarray) -> np.ndarray:
    if len(y16) < BLOCK_16K:
        y16 = np.resize(y16, BLOCK_16K)
    starts = list(range(0, len(y16) - BLOCK_16K + 1, STEP_16K))
    specs = np.stack([block_spec(y16[s:s + BLOCK_16K]) for s in starts])
    with torch.no_grad():
        return np.concatenate([net.get_embedding(torch.from_numpy(specs[i:i + 64])).numpy()
                               for i in range(0, len(specs), 64)])


def main() -> None:
    t0 = time.perf_counter()
    recipe = Recipe()
    clips = load_clips(None, ALL_SOURCES)
    audio = load_bank(clips, recipe.frontend)
    cache = Path("runs/teacher_emb.pkl")
    cache.parent.mkdir(exist_ok=True)
    emb = pickle.loads(cache.read_bytes()) if cache.exists() else {}
    todo = [c for c in clips if c.relpath not in emb]
    for i, c in enumerate(todo):
        emb[c.relpath] = embed(audio[c.path])
        if i % 500 == 0:
            print(i, len(todo), f"{time.perf_counter() - t0:.0f}s", flush=True)
    cache.write_bytes(pickle.dumps(emb))
    print(f"embeddings {time.perf_counter() - t0:.0f}s", flush=True)

    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    pool_w = dict(BACKGROUND_POOL_WEIGHTS)
    out = {"recordings": [], "streams": [], "kinds": [], "lab_clips": []}
    for fold in FOLDS:
        held = held_out(fold, clips)
        hp = {c.path for c in held}
        train = [c for c in clips if c.split != EXCLUDED and c.path not in hp]
        xs, ys, ws = [], [], []
        drones = {}
        pools = {}
        for c in train:
            (drones if c.is_drone else pools).setdefault(c.drone if c.is_drone else c.pool, []).append(c)
        for members in drones.values():
            n = sum(len(emb[c.relpath]) for c in members)
            for c in members:
                xs.append(emb[c.relpath])
                ys += [1] * len(emb[c.relpath])
                ws += [1.0 / len(drones) / n] * len(emb[c.relpath])
        total = sum(pool_w.get(k, 0.1) for k in pools)
        for key, members in pools.items():
            n = sum(len(emb[c.relpath]) for c in members)
            for c in members:
                xs.append(emb[c.relpath])
                ys += [0] * len(emb[c.relpath])
                ws += [pool_w.get(key, 0.1) / total / n] * len(emb[c.relpath])
        x = np.concatenate(xs)
        scaler = StandardScaler().fit(x)
        clf = LogisticRegression(C=float(sys.argv[2]) if len(sys.argv) > 2 else 0.05, max_iter=2000)
        w = np.array(ws)
        clf.fit(scaler.transform(x), np.array(ys), sample_weight=w / w.mean())

        def probs(cs, clf=clf, scaler=scaler):
            return np.concatenate([clf.predict_proba(scaler.transform(emb[c.relpath]))[:, 1] for c in cs])

        for drone in fold.drones:
            members = [c for c in held if c.is_drone and c.drone == drone and c.split != EXCLUDED]
            short = {}
            for c in sorted(members, key=lambda c: (c.source, c.group, c.relpath)):
                if len(audio[c.path]) >= MIN_RECORDING_SECONDS * 16000:
                    p = probs([c])
                    for lv in (0, -10, -20, -30):
                        out["recordings"].append((c.relpath, drone, lv, p))
                else:
                    short.setdefault(c.group, []).append(c)
            for g, cs in short.items():
                p = probs(cs)
                for lv in (0, -10, -20, -30):
                    out["recordings"].append((g, drone, lv, p))
        negatives = [c for c in held if not c.is_drone and c.split != EXCLUDED]
        for c in negatives:
            if "helicopter" in c.kind:
                out["recordings"].append((c.relpath, "helicopter", 0, probs([c])))
        streams = {
            AMBIENCE: [c for c in negatives
                       if c.source == AMBIENCE and not c.kind.startswith(NOT_FIELD_AMBIENCE)],
            "outdoor sites": [c for c in negatives if c.pool == "outdoor"],
            "esc50 outdoor": [c for c in negatives if c.kind.removeprefix("esc50:") in ESC50_OUTDOOR
                              and c.kind.startswith("esc50:")],
        }
        for src, members in streams.items():
            if members:
                out["streams"].append((src, sum(len(audio[c.path]) for c in members) / 16000, probs(members)))
        print(fold.name, "trained on", len(x), "blocks", flush=True)
    Path("runs/teacher_scores.pkl").write_bytes(pickle.dumps(out))
    from nightear_training.evaluate import threshold_for_rate
    from nightear_training.heldout import false_alarms, table
    dec = DecisionConfig(smooth_windows=2, open_windows=1, close_windows=2)
    curve = false_alarms(out, decision=dec)["curve"]
    for rate in (1, 2, 4, 8):
        t = threshold_for_rate(curve, rate)
        r = table(out, t, dec)
        heard = {d: f"{v['0']['heard']}/{v['0']['of']}" for d, v in r["drones"].items()}
        print(f"{rate}/h thr {t:.4f}", heard,
              "heli", r["helicopters"], "amb", r["ambience"]["events"], r["ambience"]["unique_minutes"])


if __name__ == "__main__":
    main()
