"""What a person sees: ``print(net)`` and training-curve plots."""
import numpy as np

from ._tree import leaves


def _shape(s):
    return "x".join(map(str, s))


def _count(entry):
    return sum(a.size for a in leaves(entry))


def describe(net):
    """A table of the layers (input -> output shape, activation, bias, dropout, parameter count),
    the connections, loops and blocks, the optimizer, the objective and the total."""
    lines = [f"Network(input {_shape(net.input_shape)}, {net.dtype})",
             f"  {'#':>2}  {'input':>12} -> {'output':<12} {'params':>9}  layer"]
    params = net._param_shapes
    loops = {lp.into: lp for lp in net.loops}
    skips = {s.into: s for s in net.skips}
    for i, (lay, (a, b)) in enumerate(zip(net.layers, net.shapes)):
        lines.append(f"  {i:>2}  {_shape(a):>12} -> {_shape(b):<12} {_count(params[i]):>9,}  {lay.describe()}")
        if lay.kind == "feedback":
            for j, (sub, (sa, sb)) in enumerate(zip(lay.layers, lay.inside(a))):
                lines.append(f"  {i:>2}.{j} {_shape(sa):>11} -> {_shape(sb):<12} {_count(params[i][j]):>9,}"
                             f"    {sub.describe()} (tied)")
        if i in skips:
            lines.append(f"      skip: input of layer {skips[i].infrom} -> input of layer {i} ({net.skip_accumulation})")
        if i in loops:
            lp = loops[i]
            scale = "" if lp.scale is None else f", gradient scale {lp.factor():g}"
            lines.append(f"      loop: layers {lp.into}..{lp.outof} run {lp.iterations + 1} times "
                         f"({lp.iterations} iterations, {net.loop_accumulation}{', inskips' if lp.inskips else ''}{scale})")
    opt = net.optimizer
    lines.append(f"  optimizer: {opt.describe() if hasattr(opt, 'describe') else repr(opt)}")
    clip = f", gradient clip {net.clip}" if net.clip else ""
    lines.append(f"  objective: {net.objective}{clip}")
    lines.append(f"  parameters: {net.parameters:,}")
    stats = _count(net._state_shapes)
    if stats:
        lines.append(f"  running statistics: {stats:,} (batch normalization's mean and variance, not trained)")
    return "\n".join(lines)


def plot_history(history, path=None, title=None):
    """Loss and accuracy curves; saved to ``path`` when given. Needs matplotlib (extra ``plot``)."""
    try:
        import matplotlib
        if path is not None:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'neurons[plot]'") from None
    epochs = np.arange(1, history.epochs + 1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, history.train_loss, label="train")
    if history.val_loss:
        ax1.plot(epochs[:len(history.val_loss)], history.val_loss, label="validation")
        ax2.plot(epochs[:len(history.val_acc)], 100 * np.asarray(history.val_acc), color="C1")
    ax1.set(xlabel="epoch", ylabel="loss", title="loss")
    ax1.legend()
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="validation accuracy")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return fig
