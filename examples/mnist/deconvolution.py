"""MNIST: a denoising autoencoder, convolution down and transposed convolution (deconvolution) up.

conv 8x3x3 stride 2 -> conv 16x3x3 stride 2 (7x7) -> deconv 8x3x3 stride 2 -> deconv 1x3x3
stride 2 sigmoid (28x28), every layer with a bias, trained with binary cross-entropy (per pixel)
to map noisy digits to clean ones. Reports the test MSE against the clean images next to the MSE
of the noisy input itself: 8x lower after 3 epochs (0.0095 vs 0.080). (Trained with MSE instead, this small
network settles on an all-black output, MSE 0.11: sigmoid and MSE give vanishing gradients.)

    python examples/mnist/deconvolution.py --data ../shared/data [--epochs 3]
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _common import arguments, images, neurons, plot  # noqa: E402


def network():
    return (neurons.Network((1, 28, 28))
            .convolution(8, 3, stride=2, padding=1, activation="relu", bias=True)  # 8x14x14
            .convolution(16, 3, stride=2, padding=1, activation="relu", bias=True)  # 16x7x7
            .deconvolution(8, 3, stride=2, padding=1, activation="relu", output_padding=1, bias=True)   # 8x14x14
            .deconvolution(1, 3, stride=2, padding=1, activation="sigmoid", output_padding=1, bias=True)  # 1x28x28
            .set_optimizer(neurons.optimizers.Adam(lr=2e-3))
            .set_objective("binary_cross_entropy"))


def noisy(x, seed, level=0.4):
    rng = np.random.default_rng(seed)
    return np.clip(x + level * rng.normal(size=x.shape), 0, 1).astype(np.float32)


if __name__ == "__main__":
    args = arguments(__doc__, epochs=3)
    (x, _), (xv, _), (xt, _) = images("mnist", args)
    net = network()
    print(net, end="\n\n")
    trained = net.learn(noisy(x, 1), x, validation=(noisy(xv, 2), xv, args.patience), batch=args.batch,
                        epochs=args.epochs, print_every=1, seed=args.seed)
    xn = noisy(xt, 3)
    mse = float(np.mean((trained.predict(xn) - xt) ** 2))
    baseline = float(np.mean((xn - xt) ** 2))
    print(f"\ntest MSE {mse:.5f}; the noisy input's MSE {baseline:.5f} ({baseline / mse:.1f}x higher)")
    plot(trained, args, __file__)
