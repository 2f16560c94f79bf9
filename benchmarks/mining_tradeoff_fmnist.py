"""Label-free negative mining on Fashion-MNIST 70k, labels hidden: FN share vs hardness in a fixed pixel space.

Embeddings: pixel PCA-64 (as ``encoder: pixels``, mean-centred); reference space: raw 14x14 pixels (cosine,
fixed, never seen by the miner). 2000 seeded anchors, num_negatives 8, mine.negatives' block code
(``mine_rows``) at the stage defaults and at other operating points. Hardness = percentile of the mean
reference cosine of (anchor, negative) among 200k random pairs.

    python benchmarks/mining_tradeoff_fmnist.py
"""
import gzip, time, tempfile
import numpy as np
import faiss

from curate.ops import faiss_knn
from curate.stages.mine import manifold, negatives as N
F="/usr/share/datasets/fashion-mnist"
def load():
    xs=[];ys=[]
    for p in ("train","t10k"):
        with gzip.open(f"{F}/{p}-images-idx3-ubyte.gz") as f: xs.append(np.frombuffer(f.read(),np.uint8,offset=16).reshape(-1,28,28))
        with gzip.open(f"{F}/{p}-labels-idx1-ubyte.gz") as f: ys.append(np.frombuffer(f.read(),np.uint8,offset=8))
    return np.concatenate(xs), np.concatenate(ys).astype(np.int64)
def norm(x):
    x=np.ascontiguousarray(x,np.float32); return x/np.maximum(np.linalg.norm(x,axis=1,keepdims=True),1e-12)
def ref_space(imgs):
    r=imgs.reshape(-1,14,2,14,2).astype(np.float32).mean((2,4)).reshape(len(imgs),-1)
    return norm(r)
def pca_emb(imgs,d=64):
    x=imgs.reshape(len(imgs),-1).astype(np.float32)/255.
    pca=faiss.PCAMatrix(x.shape[1],d); pca.train(x[np.random.default_rng(0).choice(len(x),20000,replace=False)])
    return norm(pca.apply(x))
imgs, y = load()
e, r = pca_emb(imgs), ref_space(imgs)
n = len(y)
ids=np.array([f"s{i:06d}" for i in range(n)],object)
rng=np.random.default_rng(0); a=rng.integers(0,n,200000); b=rng.integers(0,n,200000)
rc=np.sort((r[a]*r[b]).sum(1))
tmp=tempfile.mkdtemp(); spec=faiss_knn.KnnSpec(); vec,idxp,index=faiss_knn.prepare(e,tmp,spec)
x,index=faiss_knn._load(vec,idxp)
rows=np.sort(rng.choice(n,2000,replace=False))
base=dict(label=np.full(n,-1),group=np.full(n,-1),dup=np.arange(n),pos_score=np.ones(n,np.float32),pos_keys=np.zeros(0,np.int64),seeds=N.anchor_seeds(ids,0))
P=dict(range_max=50,range_min=0,range_extend=1000,num_negatives=8,sampling="top",semi_hard_pool=32,hcl_beta=2.0,guard_near_duplicate=True,guard_group=True,guard_label=True,guard_margin=True,max_neg_ratio=0.95,guard_manifold=True,knn=spec)
def ev(name,aux,**kw):
    t=time.time(); neg,_,c=N.mine_rows(x,index,aux,rows,dict(P,**kw)); dt=time.time()-t
    ok=neg>=0; fn=(y[np.where(ok,neg,0)]==y[rows][:,None])[ok].mean()
    h=np.einsum("bkd,bd->bk",r[np.where(ok,neg,0)],r[rows])[ok].mean()
    print(f"{name:28s} FN {fn:.3f} hard {np.searchsorted(rc,h)/len(rc)*100:5.1f} served {(ok.sum(1)==8).mean():.4f} {dt:.1f}s clusters {c.get('anchors_from_clusters',0)}",flush=True)
ev("naive",base,guard_margin=False,guard_manifold=False)
ev("margin",base,guard_manifold=False)
for k in [None]:  # fine clusters n/70
  for gk in [10,20]:
    for alpha in [0.9,0.99]:
      t=time.time(); mc=manifold.fit(e,ids,k,gk,alpha,0.1,0); print("fit",time.time()-t)
      F=manifold.diffusion(mc.centroids,gk,alpha)
      for f in [0.05,0.1,0.15,0.2]:
        aux=dict(base,**N.manifold_arrays(mc)); aux["excluded"]=manifold.excluded_clusters(F,f)
        ev(f"gk{gk} a{alpha} ex{f}",aux)
mc = manifold.fit(e, ids, None, 10, 0.9, 0.15, 0)
t0 = time.time()
neg, _, c = N.mine_rows(x, index, dict(base, **N.manifold_arrays(mc)), rows, P)
okm = neg >= 0
print(f"defaults_fn_share: {(y[np.where(okm, neg, 0)] == y[rows][:, None])[okm].mean():.3f}")
print(f"defaults_hardness_pct: {np.searchsorted(rc, np.einsum('bkd,bd->bk', r[np.where(okm, neg, 0)], r[rows])[okm].mean()) / len(rc) * 100:.1f}")
print(f"defaults_served: {(okm.sum(1) == 8).mean():.4f}")
