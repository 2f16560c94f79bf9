"""Check set for curate.ops.geometry.verify_pairs: per-edit recall on real images of many kinds
(Fashion-MNIST, LFW faces, skimage photos, textures, Hubble, fundus, MNI152, CT) and hard non-duplicate
traps. Usage: PYTHONPATH=. python benchmarks/geometry_verify_check.py ["min_corr=0.95"]
"""
import gzip, io, sys, time
import numpy as np, cv2
from PIL import Image
import skimage.data as sd
import nibabel as nib
from nilearn import datasets
from curate.ops import geometry as G

def fmnist(n, seed=0):
    with gzip.open('/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz') as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    return x

def to8(a):
    a = a.astype(np.float64); a -= a.min(); m = a.max()
    return (a / m * 255 if m > 0 else a).astype(np.uint8)

def originals():
    out = {}
    fm = fmnist(0)
    rng = np.random.default_rng(0)
    for k in rng.choice(len(fm), 40, replace=False): out[f'fm{k}'] = fm[k]
    lfw = sd.lfw_subset()
    for k in range(0, 200, 20): out[f'face{k}'] = to8(lfw[k])
    for n in ['camera','astronaut','coffee','chelsea','rocket','coins','moon','horse','clock','immunohistochemistry','page']:
        a = getattr(sd, n)()
        if a.dtype != np.uint8: a = to8(a)
        if max(a.shape[:2]) > 400:
            s = 400 / max(a.shape[:2]); a = cv2.resize(a, (int(a.shape[1]*s), int(a.shape[0]*s)), interpolation=cv2.INTER_AREA)
        out[n] = a
    out['retina'] = cv2.resize(sd.retina(), (384, 384), interpolation=cv2.INTER_AREA)
    for n in ['brick', 'grass', 'gravel']: out[n] = getattr(sd, n)()[:256, :256]
    h = sd.hubble_deep_field(); out['hubble'] = h[:256, :256]
    import nilearn, os; mni = nib.load(os.path.join(os.path.dirname(nilearn.__file__), 'datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz')).get_fdata()
    global MNI; MNI = mni
    for z in (60, 90, 120): out[f'mni_ax{z}'] = to8(np.rot90(mni[:, :, z]))
    for y in (100, 130): out[f'mni_cor{y}'] = to8(np.rot90(mni[:, y, :]))
    from pydicom import dcmread; from pydicom.data import get_testdata_file
    from curate import imaging
    out['ct'] = imaging.to_uint8(dcmread(get_testdata_file("CT_small.dcm")).pixel_array)
    return out

def rot(a, deg, border=cv2.BORDER_CONSTANT):
    h, w = a.shape[:2]; M = cv2.getRotationMatrix2D(((w-1)/2, (h-1)/2), deg, 1.0)
    return cv2.warpAffine(a, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=border)
def jpeg(a, q):
    b = io.BytesIO(); Image.fromarray(a).save(b, format='JPEG', quality=q); return np.asarray(Image.open(io.BytesIO(b.getvalue())))
def resize(a, f):
    h, w = a.shape[:2]; return np.asarray(Image.fromarray(a).resize((max(1,int(round(w*f))), max(1,int(round(h*f)))), Image.Resampling.BILINEAR))
def noise(a, s, seed=0):
    r = np.random.default_rng(seed); return np.clip(a + r.normal(0, s, a.shape), 0, 255).astype(np.uint8)
def bc(a, b=1.0, c=1.0):
    x = a.astype(np.float64); m = x.mean(); return np.clip((x - m) * c + m * b, 0, 255).astype(np.uint8)
def shift_fill(a, dy, dx):
    h, w = a.shape[:2]; M = np.float32([[1,0,dx],[0,1,dy]]); return cv2.warpAffine(a, M, (w, h))

TRANSFORMS = {
 'rot3': lambda a: rot(a, 3), 'rot5': lambda a: rot(a, -5), 'rot5refl': lambda a: rot(a, 5, cv2.BORDER_REFLECT),
 'roll2': lambda a: np.roll(a, (2, -2), (0, 1)), 'roll4': lambda a: np.roll(a, 4, 1), 'roll4y': lambda a: np.roll(a, -4, 0),
 'shift4fill': lambda a: shift_fill(a, 3, -4),
 'crop1side2': lambda a: a[:, 2:], 'crop1side4': lambda a: a[4:, :], 'crop1side4r': lambda a: a[:, :-4],
 'crop10c': lambda a: a[int(a.shape[0]*.05):a.shape[0]-int(a.shape[0]*.05), int(a.shape[1]*.05):a.shape[1]-int(a.shape[1]*.05)],
 'crop10off': lambda a: a[int(a.shape[0]*.1):, int(a.shape[1]*.1):],
 'crop10off2': lambda a: a[:a.shape[0]-int(a.shape[0]*.1), int(a.shape[1]*.1):],
 'scale0.5': lambda a: resize(a, 0.5), 'scale2': lambda a: resize(a, 2.0), 'scale0.7': lambda a: resize(a, 0.7),
 'jpeg50': lambda a: jpeg(a, 50), 'bright+15': lambda a: bc(a, 1.15), 'bright-15': lambda a: bc(a, 0.85),
 'contrast+15': lambda a: bc(a, 1, 1.15), 'contrast-15': lambda a: bc(a, 1, 0.85), 'noise5': lambda a: noise(a, 5),
}

def traps():
    t = []
    for n in ['brick', 'grass', 'gravel']:
        a = getattr(sd, n)()
        t += [(f'{n}_crops', a[:200, :200], a[256:456, 256:456]), (f'{n}_crops_near', a[:200, :200], a[40:240, 60:260])]
    h = sd.hubble_deep_field()
    for k in range(3): t.append((f'hubble{k}', h[k*256:k*256+256, :256], h[k*256:k*256+256, 300:556]))
    for z in (2, 5, 10, 175, 180, 185): t.append((f'mni_blank{z}', to8(np.rot90(MNI[:, :, z])), to8(np.rot90(MNI[:, :, z+1]))))
    for z in (40, 60, 80, 100, 120, 140, 160): t.append((f'mni_adj_ax{z}', to8(np.rot90(MNI[:, :, z])), to8(np.rot90(MNI[:, :, z+1]))))
    for y in (60, 100, 140, 180): t.append((f'mni_adj_cor{y}', to8(np.rot90(MNI[:, y, :])), to8(np.rot90(MNI[:, y+1, :]))))
    for x in (40, 70, 100, 130): t.append((f'mni_adj_sag{x}', to8(np.rot90(MNI[x, :, :])), to8(np.rot90(MNI[x+1, :, :]))))
    l, r = sd.stereo_motorcycle()[:2]; t.append(('stereo', l, r))
    from pydicom import dcmread; from pydicom.data import get_testdata_file
    from curate import imaging
    v = np.stack([imaging.to_uint8(f) for f in dcmread(get_testdata_file("emri_small.dcm")).pixel_array])
    for k in range(0, 9, 2): t.append((f'emri{k}', v[k], v[k+1]))
    fm = fmnist(0).reshape(10000, -1).astype(np.float32)
    # nearest distinct Fashion-MNIST neighbours (pixel L2): hardest small-image trap
    q = fm[:300]; d = ((q[:, None] - fm[None, :2000]) ** 2).sum(-1); d[np.arange(300), np.arange(300)] = 1e18
    nn = d.argmin(1); best = np.argsort(d[np.arange(300), nn])[:40]
    F = fmnist(0)
    for k in best: t.append((f'fm_nn{k}', F[k], F[nn[k]]))
    lfw = sd.lfw_subset()
    for k in range(0, 100, 10): t.append((f'face_pair{k}', to8(lfw[k]), to8(lfw[k+100])))
    return t

if __name__ == '__main__':
    spec = G.VerifySpec(**eval('dict(' + (sys.argv[1] if len(sys.argv) > 1 else '') + ')'))
    orig = originals()
    res = {}
    t0 = time.time(); npairs = 0
    fails = []
    for name, f in TRANSFORMS.items():
        imgs, I, J = [], [], []
        for on, a in orig.items():
            imgs += [a, f(a)]; I.append(len(imgs)-2); J.append(len(imgs)-1)
        ok, sc, det = G.verify_pairs(imgs, np.array(I), np.array(J), spec); npairs += len(I)
        res[name] = (ok.mean(), np.percentile(sc, 5))
        fails += [(name, on, d) for on, o, d in zip(orig, ok, det) if not o]
    print('recall per transform:', {k: f'{v[0]:.2f}/p5corr {v[1]:.3f}' for k, v in res.items()})
    T = traps(); imgs = [x for _, a, b in T for x in (a, b)]
    ok, sc, det = G.verify_pairs(imgs, np.arange(0, len(imgs), 2), np.arange(1, len(imgs), 2), spec); npairs += len(T)
    print(f'traps removed: {ok.sum()}/{len(T)}; time/pair {(time.time()-t0)/npairs*1e3:.2f} ms')
    for (n, _, _), o, s, d in zip(T, ok, sc, det):
        if o or s > spec.min_corr - 0.05: print('  TRAP', n, o, d)
    print('misses:', len(fails))
    for x in fails[:60]: print('  MISS', *x)
