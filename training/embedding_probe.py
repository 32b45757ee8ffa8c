"""Does a pretrained sound-effects embedding (aisfx, MIT, weights inside its wheel) hear
unmet drones better than our recipe? Leave one drone out, the very held-out items and windows,
a linear (or small MLP) head on frozen 512-d embeddings trained on the field sampler's windows.

AISFX_DIR=WHEEL/aisfx/models python training/embedding_probe.py embed   (runs/probe/FOLD.pkl:
    held-out item embeddings and 2 x 2,500 training windows per fold, ~42 min on 2 cores)
python training/embedding_probe.py heads   (low-alarm share and table per head, 2 min)
python training/embedding_probe.py with RUN.pkl@EPOCH ...   (the probe averaged in logit with a
    stored seed-0 `heldout_scores` run of our recipe: the same items)
"""
import importlib.util
import os
import pickle
import sys
import time
from pathlib import Path

import librosa
import numpy as np
import soxr
import torch

import nightear_training.heldout as heldout
from nightear.frontend import FrontendConfig, librosa_mel_basis
from nightear_training.data import ALL_SOURCES, load_clips
from nightear_training.features import window_starts
from nightear_training.recipe import Recipe, field_sampler, load_bank

OUT = Path("runs/probe")
SR44, NFFT, HOP, MELS, BLOCK, SCALE = 44100, 2048, 1024, 96, 41, 9.457798957824707
PER_CLASS = 2500
torch.set_num_threads(2)

AISFX = Path(os.environ.get("AISFX_DIR", "runs/aisfx"))  # cnn2d.py and checkpoint.pth
spec = importlib.util.spec_from_file_location("cnn2d", AISFX / "cnn2d.py")
cnn2d = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cnn2d)
weights, ds = torch.load(AISFX / "checkpoint.pth", map_location="cpu", weights_only=False)
NET = cnn2d.CrossNet(cnn2d.EmbeddingNet("max", 3, 1, 64), ds, "cpu")
NET.load_state_dict(weights)
NET.eval()
FE = FrontendConfig()
WIDTH = 97
N16 = FE.samples_for_frames(WIDTH)


def mel_power(y16: np.ndarray) -> np.ndarray:
    y = soxr.resample(np.asarray(y16, np.float32), FE.sample_rate, SR44)
    if len(y) < NFFT:
        y = np.pad(y, (0, NFFT - len(y)))
    return librosa.feature.melspectrogram(y=y, sr=SR44, n_fft=NFFT, hop_length=HOP, n_mels=MELS,
                                          fmin=0.0, fmax=SR44 / 2, htk=True, norm=1.0, power=2.0,
                                          center=False)


def embed_blocks(blocks: list[np.ndarray]) -> np.ndarray:
    out = []
    with torch.no_grad():
        for i in range(0, len(blocks), 128):
            x = torch.from_numpy(np.stack(blocks[i:i + 128]).astype(np.float32))
            out.append(NET.get_embedding(x).numpy())
    return np.concatenate(out) if out else np.zeros((0, 512), np.float32)


def block(P: np.ndarray, f0: int, peak: float) -> np.ndarray:
    b = P[:, f0:f0 + BLOCK]
    if b.shape[1] < BLOCK:
        b = np.pad(b, ((0, 0), (0, BLOCK - b.shape[1])))
    peak = peak if peak > 1e-6 else 1.0
    return (np.log10(b / peak ** 2 * 1e4 + 1.0) / SCALE).T  # (time, mels)


def embed_item(y16: np.ndarray, width: int, hop: int) -> np.ndarray:
    """The embedding of every window the daemon would score in y16 (same starts)."""
    starts = window_starts(FE.frames_in(len(y16)), width, hop)
    P = mel_power(y16)
    blocks = []
    for s in starts:
        seg = y16[s * FE.hop_length: s * FE.hop_length + N16]
        f0 = int(round(s * FE.hop_length / FE.sample_rate * SR44 / HOP))
        blocks.append(block(P, f0, float(np.abs(seg).max()) if len(seg) else 1.0))
    return embed_blocks(blocks)


def embed_window(y16: np.ndarray) -> np.ndarray:
    return block(mel_power(y16), 0, float(np.abs(y16).max()))


def embed() -> None:
    OUT.mkdir(exist_ok=True)
    recipe = Recipe()
    clips = load_clips(None, ALL_SOURCES)
    audio = load_bank(clips, recipe.frontend)
    mel = librosa_mel_basis(recipe.frontend)
    heldout.log_mel = lambda y, fe, mb: y  # the windows' audio, not our features
    heldout.clip_windows = embed_item
    heldout.HARD_NEGATIVES = {}  # per-kind streams: not needed for the share, saves a third
    for fold in heldout.FOLDS:
        path = OUT / f"{fold.name}.pkl"
        if path.exists():
            continue
        t0 = time.time()
        held = heldout.held_out(fold, clips)
        held_paths = {c.path for c in held}
        train_clips = [c for c in clips if c.split != heldout.EXCLUDED and c.path not in held_paths]
        items_path = OUT / f"{fold.name}-items.pkl"
        if items_path.exists():
            items = pickle.load(open(items_path, "rb"))
        else:
            items = heldout.fold_items(fold, held, audio, recipe, mel, seed=0)
            pickle.dump(items, open(items_path, "wb"))
        t1 = time.time()
        print(f"{fold.name}: {len(train_clips)} training clips, items in {t1 - t0:.0f} s", flush=True)
        sampler = field_sampler(recipe, train_clips, audio, seed=0)
        rng = np.random.default_rng(0)
        labels = np.array([0, 1] * PER_CLASS)
        X = embed_blocks([embed_window(sampler.window(rng, bool(y))) for y in labels])
        pickle.dump({"items": items, "X": X, "y": labels}, open(path, "wb"))
        print(f"{fold.name}: items {t1 - t0:.0f} s, training windows {time.time() - t1:.0f} s, "
              f"{sum(len(r.windows) for r in items.recordings)} recording windows", flush=True)


def _row(name: str, scores: dict) -> None:
    from nightear_training.evaluate import threshold_for_rate
    from nightear_training.per_recording import arriving, false_alarms, low_rate_share, table

    t = threshold_for_rate(false_alarms(scores)["curve"], 1.0)
    r = table(scores, t)
    heard = [r["pooled"][k]["heard"] for k in ("0", "-10", "-20", "-30")]
    per_drone = {g: v["0"]["heard"] for g, v in r["drones"].items()}
    print(f"{name}: share {low_rate_share(scores)}, arriving {low_rate_share(arriving(scores))}, "
          f"threshold {t}, heard {heard} of 68, as recorded {per_drone}, "
          f"helicopters {r['helicopters']['with_event']}, ambience events {r['ambience']['events']}, "
          f"lab {r['lab_test_split']['accuracy']}", flush=True)


def heads() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folds = {f.name: pickle.load(open(OUT / f"{f.name}.pkl", "rb")) for f in heldout.FOLDS}
    makers = {
        f"logreg C={c}": lambda c=c: make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
        for c in (0.01, 0.1, 1.0)
    }
    makers["mlp 128"] = lambda: make_pipeline(StandardScaler(), MLPClassifier(
        (128,), alpha=1e-2, max_iter=300, random_state=0))
    for name, make in makers.items():
        parts = []
        for fold in folds.values():
            clf = make().fit(fold["X"], fold["y"])
            parts.append(heldout.score_items(lambda w, clf=clf: clf.predict_proba(w)[:, 1], fold["items"]))
        scores = heldout.merge(parts)
        _row(name, scores)
        pickle.dump(scores, open(OUT / f"scores-{name.replace(' ', '_')}.pkl", "wb"))


def with_runs() -> None:
    def logit(p: np.ndarray) -> np.ndarray:
        p = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p))

    probe = pickle.load(open(OUT / "scores-logreg_C=0.01.pkl", "rb"))
    _row("probe", probe)
    for spec in sys.argv[2:]:
        path, epoch = spec.split("@")
        run = pickle.load(open(path, "rb"))[int(epoch)]
        if [s[0] for s in run["streams"]] != [s[0] for s in probe["streams"]]:
            raise SystemExit(f"{path}: not scored on the probe's items (a seed-0 run is)")
        own_rec = {tuple(r[:3]): r[3] for r in run["recordings"]}
        own_lab = {c[0]: c[2] for c in run["lab_clips"]}
        for w in (0.0, 0.25, 0.5):
            def mix(a: np.ndarray, b: np.ndarray, w: float = w) -> np.ndarray:
                return 1 / (1 + np.exp(-((1 - w) * logit(a) + w * logit(b))))
            _row(f"{spec}, probe at weight {w}", {
                "recordings": [(*r[:3], mix(own_rec[tuple(r[:3])], r[3])) for r in probe["recordings"]],
                "streams": [(s[0], s[1], mix(o[2], s[2]))
                            for o, s in zip(run["streams"], probe["streams"], strict=True)],
                "kinds": [],
                "lab_clips": [(c[0], c[1], float(mix(own_lab[c[0]], c[2]))) for c in probe["lab_clips"]]})

if __name__ == "__main__":
    {"embed": embed, "heads": heads, "with": with_runs}[sys.argv[1]]()
