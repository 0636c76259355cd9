#!/usr/bin/env python3
"""The tensor-level allocation trace of PyTorch training steps (issue 10).

    torch_trace.py MODEL [--batch N | --scale S] [--steps N] [--summary]

MODEL is resnet50 (torchvision ResNet-50 v1.5, 224x224, base batch 32) or
yolov8s (Ultralytics YOLOv8s, 640x640, 80 classes, base batch 16). --scale S
multiplies the base batch; the result may be fractional (every per-sample
tensor size is scaled and rounded to a byte), which gives the capacity search
a finer step than one image; --batch N sets a whole batch.

Prints one event a line, in the order PyTorch's tensors would be created and
destroyed on the GPU:
    a ID BYTES    a tensor storage of BYTES bytes is allocated
    f ID          that storage is freed
    s N           training step N begins
    # ...         a comment (the header states the model and its totals)
tests/programs/torch_replay.c turns this into the caching allocator's
hipMalloc/hipFree calls. --summary prints the totals only.

How sizes and lifetimes are derived, and every simplification:
tests/programs/BENCH-WORKLOAD.md. Python 3.11 standard library only.
"""
import argparse
import sys

F32 = 4
I64 = 8


class Val:
    """A tensor value of the autograd graph; alias: shares another's storage."""

    __slots__ = ("nbytes", "alias", "rg", "uses", "keep", "sid")

    def __init__(self, nbytes, alias=None, rg=True):
        self.nbytes = max(1, round(nbytes))  # a fractional batch scales bytes
        self.alias = alias
        self.rg = rg
        self.uses = 0
        self.keep = False
        self.sid = None


class Param:
    __slots__ = ("nbytes", "grad", "sid", "gsid", "buf")

    def __init__(self, nbytes, grad=True):
        self.nbytes = nbytes
        self.grad = grad
        self.sid = self.gsid = self.buf = None


class Node:
    """One autograd node: what its forward allocates and saves, what its
    backward allocates. grad_in per input: bytes to allocate, 'pass' (the
    output's gradient itself, as add's and cat's backward return views of
    it), or None (no gradient)."""

    __slots__ = ("inputs", "outputs", "saved", "grad_in", "params", "extra", "extra_sids")

    def __init__(self, inputs, outputs, saved=(), grad_in=None, params=(), extra=()):
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.saved = list(saved)
        self.grad_in = list(grad_in) if grad_in is not None else [v.nbytes for v in inputs]
        self.params = list(params)
        self.extra = list(extra)
        self.extra_sids = []


class Graph:
    def __init__(self, n):
        self.n = n
        self.nodes = []
        self.params = []  # in module registration order (model.to(device))
        self.buffers = []  # BN running stats, likewise

    def param(self, nbytes, grad=True):
        p = Param(nbytes, grad)
        self.params.append(p)
        return p

    def node(self, *a, **k):
        nd = Node(*a, **k)
        for v in nd.inputs:
            v.uses += 1
        self.nodes.append(nd)
        return nd

    # ---- layers (shape: (C, H, W) kept next to each value) ----
    def t(self, c, h, w, elem=F32):
        return Val(self.n * c * h * w * elem)

    def conv(self, x, shp, cout, k, s, bias=False):
        cin, h, w = shp
        p = (k - 1) // 2
        ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        ps = [self.param(cout * cin * k * k * F32)]
        if bias:
            ps.append(self.param(cout * F32))
        out = self.t(cout, ho, wo)
        # convolution saves input and weight; backward: grad_input (if the
        # input needs one), grad_weight (and grad_bias) into .grad
        self.node([x], [out], saved=[x], params=ps)
        return out, (cout, ho, wo)

    def bn(self, x, shp):
        c = shp[0]
        ps = [self.param(c * F32), self.param(c * F32)]
        self.buffers += [c * F32, c * F32, I64]  # running_mean, running_var, num_batches_tracked
        out = self.t(*shp)
        # batch_norm saves input, save_mean and save_invstd (C floats each)
        self.node([x], [out], saved=[x], params=ps, extra=[c * F32, c * F32])
        return out

    def relu_(self, x):
        out = Val(x.nbytes, alias=x)  # inplace=True in torchvision
        self.node([x], [out], saved=[out])  # threshold_backward on the result
        return out

    def silu(self, x):
        out = Val(x.nbytes)
        self.node([x], [out], saved=[x])
        return out

    def add(self, a, b, inplace=False):
        out = Val(a.nbytes, alias=a if inplace else None)
        self.node([a, b], [out], grad_in=["pass", "pass"])
        return out

    def maxpool(self, x, shp, k, s):
        c, h, w = shp
        p = k // 2
        ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        out = self.t(c, ho, wo)
        # max_pool2d_with_indices: int64 indices saved with the input
        self.node([x], [out], saved=[x], extra=[self.n * c * ho * wo * I64])
        return out, (c, ho, wo)

    def cat(self, xs, shps):
        c = sum(s[0] for s in shps)
        out = self.t(c, shps[0][1], shps[0][2])
        self.node(xs, [out], grad_in=["pass"] * len(xs))  # backward: narrow views
        return out, (c, shps[0][1], shps[0][2])

    def chunk2(self, x):
        a, b = Val(x.nbytes // 2, alias=x), Val(x.nbytes // 2, alias=x)
        # split's backward concatenates the two gradients into one new tensor
        self.node([x], [a, b], grad_in=[x.nbytes])
        return a, b

    def upsample2(self, x, shp):
        c, h, w = shp
        out = self.t(c, 2 * h, 2 * w)
        self.node([x], [out])
        return out, (c, 2 * h, 2 * w)

    # ---- building blocks ----
    def conv_bn_act(self, x, shp, cout, k, s):  # Ultralytics Conv: conv, BN, SiLU
        y, shp = self.conv(x, shp, cout, k, s)
        return self.silu(self.bn(y, shp)), shp


def resnet50(n):
    """torchvision.models.resnet50 (v1.5: stride on the 3x3 conv), 224x224."""
    g = Graph(n)
    x = Val(n * 3 * 224 * 224 * F32, rg=False)
    y, shp = g.conv(x, (3, 224, 224), 64, 7, 2)
    y = g.relu_(g.bn(y, shp))
    y, shp = g.maxpool(y, shp, 3, 2)
    inplanes = 64
    for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            s = stride if i == 0 else 1
            identity, ishp = y, shp
            o, oshp = g.conv(y, shp, planes, 1, 1)
            o = g.relu_(g.bn(o, oshp))
            o, oshp = g.conv(o, oshp, planes, 3, s)
            o = g.relu_(g.bn(o, oshp))
            o, oshp = g.conv(o, oshp, planes * 4, 1, 1)
            o = g.bn(o, oshp)
            if i == 0:  # downsample: conv1x1 + BN
                identity, _ = g.conv(y, ishp, planes * 4, 1, s)
                identity = g.bn(identity, oshp)
            o = g.add(o, identity, inplace=True)  # out += identity
            y, shp = g.relu_(o), oshp
            inplanes = planes * 4
    c = shp[0]
    pooled = Val(n * c * F32)  # adaptive_avg_pool2d + flatten (a view)
    g.node([y], [pooled])
    w, b = g.param(1000 * c * F32), g.param(1000 * F32)
    logits = Val(n * 1000 * F32)
    g.node([pooled], [logits], saved=[pooled], params=[w, b])  # addmm
    # CrossEntropyLoss = log_softmax (saves its result) + nll_loss
    lsm = Val(logits.nbytes)
    g.node([logits], [lsm], saved=[lsm])
    loss = Val(F32)
    g.node([lsm], [loss], extra=[F32])  # total_weight
    del inplanes
    inputs = [x.nbytes, n * I64]  # images, labels
    return g, x, [logits, loss], loss, inputs


def yolov8s(n):
    """ultralytics/cfg/models/v8/yolov8.yaml at scale s (depth 0.33, width
    0.50, max_channels 1024), 640x640, nc=80, training forward + loss."""
    g = Graph(n)
    x = Val(n * 3 * 640 * 640 * F32, rg=False)

    def ch(c):
        return int(min(c, 1024) * 0.5)

    def rep(k):
        return max(round(k * 0.33), 1)

    def c2f(x, shp, c2, k, shortcut):
        c = int(c2 * 0.5)
        y, yshp = g.conv_bn_act(x, shp, 2 * c, 1, 1)
        a, b = g.chunk2(y)
        parts, pshps = [a, b], [(c,) + yshp[1:]] * 2
        last = b
        for _ in range(k):  # Bottleneck(c, c, shortcut, k=(3, 3), e=1.0)
            t, tshp = g.conv_bn_act(last, pshps[-1], c, 3, 1)
            t, tshp = g.conv_bn_act(t, tshp, c, 3, 1)
            if shortcut:
                t = g.add(last, t)
            parts.append(t)
            pshps.append(tshp)
            last = t
        cat, cshp = g.cat(parts, pshps)
        return g.conv_bn_act(cat, cshp, c2, 1, 1)

    shp = (3, 640, 640)
    y, shp = g.conv_bn_act(x, shp, ch(64), 3, 2)  # 0
    y, shp = g.conv_bn_act(y, shp, ch(128), 3, 2)  # 1
    y, shp = c2f(y, shp, ch(128), rep(3), True)  # 2
    y, shp = g.conv_bn_act(y, shp, ch(256), 3, 2)  # 3
    p3, p3s = c2f(y, shp, ch(256), rep(6), True)  # 4
    y, shp = g.conv_bn_act(p3, p3s, ch(512), 3, 2)  # 5
    p4, p4s = c2f(y, shp, ch(512), rep(6), True)  # 6
    y, shp = g.conv_bn_act(p4, p4s, ch(1024), 3, 2)  # 7
    y, shp = c2f(y, shp, ch(1024), rep(3), True)  # 8
    # 9: SPPF(c1, c2, 5)
    c_ = shp[0] // 2
    s0, sshp = g.conv_bn_act(y, shp, c_, 1, 1)
    ys, yss = [s0], [sshp]
    for _ in range(3):
        m, mshp = g.maxpool(ys[-1], yss[-1], 5, 1)
        ys.append(m)
        yss.append(mshp)
    cat, cshp = g.cat(ys, yss)
    p5, p5s = g.conv_bn_act(cat, cshp, ch(1024), 1, 1)
    # head
    u, us = g.upsample2(p5, p5s)  # 10
    u, us = g.cat([u, p4], [us, p4s])  # 11
    h12, h12s = c2f(u, us, ch(512), rep(3), False)  # 12
    u, us = g.upsample2(h12, h12s)  # 13
    u, us = g.cat([u, p3], [us, p3s])  # 14
    h15, h15s = c2f(u, us, ch(256), rep(3), False)  # 15
    d, ds = g.conv_bn_act(h15, h15s, ch(256), 3, 2)  # 16
    d, ds = g.cat([d, h12], [ds, h12s])  # 17
    h18, h18s = c2f(d, ds, ch(512), rep(3), False)  # 18
    d, ds = g.conv_bn_act(h18, h18s, ch(512), 3, 2)  # 19
    d, ds = g.cat([d, p5], [ds, p5s])  # 20
    h21, h21s = c2f(d, ds, ch(1024), rep(3), False)  # 21
    # 22: Detect(nc=80, ch=(128, 256, 512)), reg_max 16
    nc, reg = 80, 16
    c2 = max(16, h15s[0] // 4, reg * 4)
    c3 = max(h15s[0], min(nc, 100))
    levels, lshps = [], []
    for f, fs in ((h15, h15s), (h18, h18s), (h21, h21s)):
        a, ashp = g.conv_bn_act(f, fs, c2, 3, 1)
        a, ashp = g.conv_bn_act(a, ashp, c2, 3, 1)
        a, ashp = g.conv(a, ashp, 4 * reg, 1, 1, bias=True)
        b, bshp = g.conv_bn_act(f, fs, c3, 3, 1)
        b, bshp = g.conv_bn_act(b, bshp, c3, 3, 1)
        b, bshp = g.conv(b, bshp, nc, 1, 1, bias=True)
        o, oshp = g.cat([a, b], [ashp, bshp])
        levels.append(o)
        lshps.append(oshp)
    g.param(reg * F32, grad=False)  # DFL's fixed 1x1 conv (requires_grad False)
    # v8DetectionLoss (simplified: see BENCH-WORKLOAD.md)
    no = nc + 4 * reg
    anchors = sum(s[1] * s[2] for s in lshps)
    feats = Val(n * no * anchors * F32)
    g.node(levels, [feats], grad_in=["pass"] * 3)  # cat of views
    scores = Val(n * anchors * nc * F32)  # permute(0, 2, 1).contiguous()
    g.node([feats], [scores], grad_in=[feats.nbytes])
    distri = Val(n * anchors * 4 * reg * F32)
    g.node([feats], [distri], grad_in=[feats.nbytes])
    target = Val(n * anchors * nc * F32, rg=False)  # the assigner's target_scores
    g.node([], [target])
    bce = Val(scores.nbytes)  # BCEWithLogits(reduction='none'), saves input and target
    g.node([scores, target], [bce], saved=[scores, target], grad_in=[scores.nbytes, None])
    l1 = Val(F32)
    g.node([bce], [l1])  # .sum()
    soft = Val(distri.nbytes)  # pred_dist.view(b, a, 4, 16).softmax(3)
    g.node([distri], [soft], saved=[soft])
    boxes = Val(n * anchors * 4 * F32)  # .matmul(proj)
    g.node([soft], [boxes], saved=[soft])
    l2 = Val(F32)
    g.node([boxes], [l2])  # box and DFL losses reduced
    loss = Val(F32)
    g.node([l1, l2], [loss], grad_in=["pass", "pass"])
    inputs = [x.nbytes, n * 8 * 6 * F32]  # images, targets (about 8 boxes an image)
    return g, x, levels + [loss], loss, inputs


MODELS = {
    # name: (builder, base batch, optimizer settings, zero_grad position)
    # torchvision references/classification/train.py: SGD momentum 0.9,
    # weight decay 1e-4, zero_grad() between the loss and backward().
    "resnet50": (resnet50, 32, "after-forward"),
    # ultralytics engine/trainer.py: SGD momentum 0.937, weight decay 5e-4
    # (optimizer=auto for long runs), zero_grad() right after step().
    "yolov8s": (yolov8s, 16, "after-step"),
}


class Trace:
    def __init__(self, out):
        self.out = out
        self.next = 0
        self.refs = {}
        self.live = 0
        self.peak = 0
        self.allocs = 0
        self.size = {}

    def alloc(self, nbytes):
        nbytes = max(1, round(nbytes))
        sid = self.next
        self.next += 1
        self.refs[sid] = 1
        self.live += nbytes
        self.size[sid] = nbytes
        self.peak = max(self.peak, self.live)
        self.allocs += 1
        if self.out:
            self.out.append(f"a {sid} {nbytes}")
        return sid

    def incref(self, sid):
        self.refs[sid] += 1

    def decref(self, sid):
        self.refs[sid] -= 1
        if self.refs[sid] == 0:
            del self.refs[sid]
            self.live -= self.size.pop(sid)
            if self.out:
                self.out.append(f"f {sid}")


def step(tr, g, inputs_vals, outputs, loss, zero_grad, first):
    nodes = g.nodes
    for v in outputs:
        v.keep = True
    uses = {}
    for nd in nodes:
        for v in nd.inputs:
            uses[id(v)] = uses.get(id(v), 0) + 1
    # forward
    for nd in nodes:
        for v in nd.outputs:
            if v.alias is not None:
                v.sid = v.alias.sid
                tr.incref(v.sid)
            else:
                v.sid = tr.alloc(v.nbytes)
        nd.extra_sids = [tr.alloc(b) for b in nd.extra]
        for v in nd.saved:
            tr.incref(v.sid)
        for v in nd.inputs:
            uses[id(v)] -= 1
            if uses[id(v)] == 0 and not v.keep:
                tr.decref(v.sid)
        for v in nd.outputs:
            if id(v) not in uses and not v.keep:
                tr.decref(v.sid)
    if zero_grad == "after-forward":
        zero(tr, g)
    # backward
    grads = {id(loss): tr.alloc(F32)}  # torch.ones_like(loss)

    def accumulate(v, s):
        old = grads.get(id(v))
        if old is None:
            grads[id(v)] = s
        elif tr.refs[old] == 1:  # InputBuffer: in-place add into the buffer
            tr.decref(s)
        else:
            n = tr.alloc(v.nbytes)
            tr.decref(old)
            tr.decref(s)
            grads[id(v)] = n

    for nd in reversed(nodes):
        gs = [grads.pop(id(v), None) for v in nd.outputs]
        if any(x is not None for x in gs):
            for p in nd.params:
                if p.grad:
                    p.gsid = tr.alloc(p.nbytes)  # AccumulateGrad steals it as .grad
            for v, spec in zip(nd.inputs, nd.grad_in):
                if spec is None or not v.rg:
                    continue
                if spec == "pass":
                    s = next(x for x in gs if x is not None)
                    tr.incref(s)
                else:
                    s = tr.alloc(spec)
                accumulate(v, s)
        for s in nd.extra_sids:
            tr.decref(s)
        for v in nd.saved:
            tr.decref(v.sid)
        for x in gs:
            if x is not None:
                tr.decref(x)
    for s in grads.values():  # gradients of leaves that need none (never reached)
        tr.decref(s)
    for v in outputs:
        tr.decref(v.sid)
    # optimizer.step(): torch/optim/sgd.py _multi_tensor_sgd (foreach)
    ps = [p for p in g.params if p.grad and p.gsid is not None]
    wd = [tr.alloc(p.nbytes) for p in ps]  # torch._foreach_add(grads, params, alpha=wd)
    if first:
        for p in ps:
            p.buf = tr.alloc(p.nbytes)  # momentum_buffer = torch.clone(grad)
    for s in wd:
        tr.decref(s)
    if zero_grad == "after-step":
        zero(tr, g)



def zero(tr, g):  # optimizer.zero_grad(set_to_none=True)
    for p in g.params:
        if p.gsid is not None:
            tr.decref(p.gsid)
            p.gsid = None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", choices=sorted(MODELS))
    ap.add_argument("--batch", type=int)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--summary", action="store_true")
    a = ap.parse_args()
    build, base, zero_grad = MODELS[a.model]
    n = a.batch if a.batch else base * a.scale
    g, x, outputs, loss, inputs = build(n)
    x.keep = True  # the images stay bound to a Python name all step
    out = None if a.summary else []
    tr = Trace(out)
    # model.to(device): every parameter, then every buffer, one tensor each
    for p in g.params:
        p.sid = tr.alloc(p.nbytes)
    bufs = [tr.alloc(b) for b in g.buffers]
    del bufs
    persistent = tr.live
    prev = []
    for s in range(1, a.steps + 1):
        if out is not None:
            out.append(f"s {s}")
        cur = [tr.alloc(b) for b in inputs]  # images.to(device), targets.to(device)
        for sid in prev:  # the previous batch is dropped once the new one is bound
            tr.decref(sid)
        prev = cur
        x.sid = cur[0]
        step(tr, g, cur, outputs, loss, zero_grad, s == 1)
    pbytes = sum(p.nbytes for p in g.params)
    header = [
        f"# model {a.model} batch {n:g} steps {a.steps}",
        f"# parameters {pbytes // F32} ({pbytes} bytes fp32) in {len(g.params)} tensors",
        f"# buffers {sum(g.buffers)} bytes; persistent before step 1 {persistent} bytes",
        f"# tensor bytes at peak {tr.peak}; allocations {tr.allocs}",
    ]
    w = sys.stdout.write
    w("\n".join(header) + "\n")
    if out is not None:
        w("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
