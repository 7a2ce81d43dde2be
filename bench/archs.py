"""The benchmark architectures, in neurons and (when installed) in PyTorch, built alike."""
import neurons
from neurons.layers import Convolution

NAMES = ("quickstart", "tiny3conv", "mlp", "lenet", "loop", "feedback", "bncnn", "lstm", "cifar", "iris-b1")
# what each network trains on (``bench/worker.py`` builds it): MNIST's 60,000 images unless named
# here; "cifar" on random CIFAR-shaped images (10,000: an epoch of 60,000 would take minutes), "iris-b1"
# on the 120 training flowers of the iris example's split, at batch 1 (the per-step overhead)
INPUTS = {"mlp": "flat", "lstm": "rows", "cifar": "cifar", "iris-b1": "iris"}
FIXED_BATCH = {"iris-b1": 1}


def neurons_net(name, dtype="float32"):
    n = neurons.Network((1, 28, 28), dtype)
    if name == "cifar":           # conv 32-32 -> pool -> conv 64-64 -> pool -> dense 256 -> dense 10
        n = neurons.Network((3, 32, 32), dtype)
        for filters in (32, 32, "pool", 64, 64, "pool"):
            n = n.maxpool(2) if filters == "pool" else n.convolution(filters, 3, padding=1, activation="relu", bias=True)
        n = n.dense(256, "relu").dense(10, "softmax")
    elif name == "iris-b1":       # the Rust original's iris example: 4 -> 50 -> 50 -> 3
        n = neurons.Network((4,), dtype).dense(50, "relu").dense(50, "relu").dense(3, "softmax")
    elif name == "quickstart":
        n = n.convolution(5, 3, padding=1, activation="relu").maxpool(2).dense(100, "relu", bias=False)
        n = n.dense(10, "softmax", bias=False)
    elif name == "bncnn":         # the quickstart CNN with batch normalization after the conv and the dense
        n = n.convolution(5, 3, padding=1, activation="relu").batchnorm().maxpool(2).dense(100, "relu", bias=False)
        n = n.batchnorm().dense(10, "softmax", bias=False)
    elif name == "tiny3conv":
        for _ in range(3):
            n = n.convolution(1, 3, padding=1, activation="relu")
        n = n.maxpool(2).dense(10, "softmax")
    elif name == "mlp":
        n = neurons.Network((784,), dtype).dense(256, "relu", bias=False).dense(128, "relu", bias=False)
        n = n.dense(10, "softmax", bias=False)
    elif name == "lenet":
        n = (n.convolution(32, 3, padding=1, activation="relu", bias=True).maxpool(2)
             .convolution(64, 3, padding=1, activation="relu", bias=True).maxpool(2)
             .dense(128, "relu").dense(10, "softmax"))
    elif name == "loop":          # the comparison study's cnn "loop2"
        n = (n.convolution(8, 3, padding=1, activation="relu").maxpool(2)
             .convolution(8, 3, padding=1, activation="relu").maxpool(2).dense(10, "softmax")
             .loopback(2, 2, 2))
    elif name == "feedback":      # the comparison study's cnn "feedback2"
        n = (n.convolution(8, 3, padding=1, activation="relu").maxpool(2)
             .feedback([Convolution(8, 3, padding=1, activation="relu")], loops=2).maxpool(2)
             .dense(10, "softmax"))
    elif name == "lstm":          # sequential MNIST: 28 rows of 28 pixels, the images as (N, 28, 28)
        n = neurons.Network((28, 28), dtype).recurrent(128, "lstm").dense(10, "softmax")
    else:
        raise ValueError(name)
    return n.set_optimizer(neurons.optimizers.SGD(lr=0.01)).set_objective("cross_entropy")


def torch_net(name):
    import torch
    from torch import nn

    def conv(i, o, bias=False):
        return nn.Conv2d(i, o, 3, padding=1, bias=bias)

    class Loop(nn.Module):
        """Layers 0..1 of the study's network, then one conv applied 3 (loop) or 2 (block) times."""

        def __init__(self, passes, mean):
            super().__init__()
            self.c0, self.c2, self.out = conv(1, 8), conv(8, 8), nn.Linear(8 * 7 * 7, 10)
            self.passes, self.mean = passes, mean

        def forward(self, x):
            h = torch.max_pool2d(torch.relu(self.c0(x)), 2)
            ys = []
            for _ in range(self.passes):
                h = torch.relu(self.c2(h))
                ys.append(h)
            h = torch.stack(ys).mean(0) if self.mean else h
            return self.out(torch.max_pool2d(h, 2).flatten(1))

    class Sequential(nn.Module):
        """LSTM 128 over the rows of (N, 28, 28) images, its last step -> dense 10."""

        def __init__(self):
            super().__init__()
            self.lstm, self.out = nn.LSTM(28, 128, batch_first=True), nn.Linear(128, 10)

        def forward(self, x):
            return self.out(self.lstm(x)[0][:, -1])

    if name == "cifar":
        return nn.Sequential(conv(3, 32, True), nn.ReLU(), conv(32, 32, True), nn.ReLU(), nn.MaxPool2d(2),
                             conv(32, 64, True), nn.ReLU(), conv(64, 64, True), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(4096, 256), nn.ReLU(), nn.Linear(256, 10))
    if name == "iris-b1":
        return nn.Sequential(nn.Linear(4, 50), nn.ReLU(), nn.Linear(50, 50), nn.ReLU(), nn.Linear(50, 3))
    if name == "quickstart":
        return nn.Sequential(conv(1, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(980, 100, bias=False),
                             nn.ReLU(), nn.Linear(100, 10, bias=False))
    if name == "bncnn":
        return nn.Sequential(conv(1, 5), nn.ReLU(), nn.BatchNorm2d(5), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(980, 100, bias=False), nn.ReLU(), nn.BatchNorm1d(100),
                             nn.Linear(100, 10, bias=False))
    if name == "tiny3conv":
        return nn.Sequential(conv(1, 1), nn.ReLU(), conv(1, 1), nn.ReLU(), conv(1, 1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(196, 10))
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256, bias=False), nn.ReLU(), nn.Linear(256, 128, bias=False),
                             nn.ReLU(), nn.Linear(128, 10, bias=False))
    if name == "lenet":
        return nn.Sequential(conv(1, 32, True), nn.ReLU(), nn.MaxPool2d(2), conv(32, 64, True), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))
    if name == "loop":
        return Loop(3, True)
    if name == "feedback":
        return Loop(2, False)
    if name == "lstm":
        return Sequential()
    raise ValueError(name)


def train_flops(name, batch):
    """Multiply-adds x 2 of one training step (forward, and backward without the input's gradient)."""
    net = neurons_net(name)
    total = 0.0
    first = True
    for op in net.program.ops:
        if not hasattr(op, "layer"):
            continue
        lay = net.layers[op.layer] if op.sub < 0 else net.layers[op.layer].layers[op.sub]
        shapes = net.shapes[op.layer] if op.sub < 0 else net.layers[op.layer].inside(net.shapes[op.layer][0])[op.sub]
        (i_s, o_s) = shapes
        if lay.kind == "recurrent":
            # per step: x_t and h_{t-1} through G·units rows, both once more for the weights'
            # gradients and for (dx, dh); a first layer skips dx but still needs dh
            steps, rows = i_s[0], lay.gates * lay.units
            macs = steps * rows * (i_s[1] + lay.units)
            if first:
                total += 2 * steps * rows * lay.units
        elif lay.kind == "dense":
            macs = i_s[0] * o_s[0]
        elif lay.kind == "convolution":
            macs = o_s[0] * o_s[1] * o_s[2] * i_s[0] * lay.kernel[0] * lay.kernel[1]
        else:
            macs = 0
        # forward + weight gradient + (except for the first layer) input gradient
        total += 2 * macs * (2 if first else 3)
        first = False
    return total * batch
