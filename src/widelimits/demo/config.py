"""Sizes, hyperparameters and shared constants of the ``widelimits demo`` (`DemoConfig`)."""

from __future__ import annotations

from dataclasses import dataclass

N_CLASSES = 10
TARGET_OFFSET = 0.1  # targets: one-hot minus 0.1, so each output has mean zero over the classes
SMALL_WIDTH_ONE_THREAD = 2048  # below this width, one thread beats several (thread sync overhead)


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and hyperparameters of one demo run (`default` or `quick`)."""

    hidden_layers: int = 3
    W_std: float = 1.5
    b_std: float = 0.05
    readout_W_std: float = 0.1
    ridge: float = 1e-4
    train_widths: tuple[int, ...] = (64, 256, 1024, 4096)
    epochs: int = 20
    batch_size: int = 64
    lr_fraction: float = 0.5
    ntk_widths: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048, 4096)
    ntk_seeds: int = 3
    ntk_points: int = 128
    curve_width: int = 512
    curve_points: int = 16
    std_bins: int = 5
    limits_scalings: tuple[str, ...] = ("NTK", "MF", "sym-default", "IC-MF")
    limits_widths: tuple[int, ...] = (128, 512, 2048)
    limits_steps: int = 300
    limits_n_train: int = 512
    limits_records: int = 12
    limits_kernel_points: int = 64
    limits_particles: int = 1024
    linear_q: int = 1
    linear_d: int = 10
    linear_k: int = 2
    linear_n: int = 6
    linear_widths: tuple[int, ...] = (64, 128, 256, 512, 1024)
    linear_seeds: int = 3
    linear_t_max: float = 5.0

    @classmethod
    def default(cls) -> DemoConfig:
        return cls()

    @classmethod
    def quick(cls) -> DemoConfig:
        """Small sizes for tests and a first look (well under 30 s)."""
        return cls(
            train_widths=(64, 256, 1024), epochs=8, ntk_widths=(64, 256, 1024), ntk_seeds=2,
            ntk_points=64, curve_width=256, limits_widths=(128, 512), limits_steps=100,
            limits_n_train=256, limits_records=10, limits_kernel_points=32, limits_particles=512,
            linear_d=6, linear_n=3, linear_widths=(32, 64, 128, 256), linear_seeds=2,
            linear_t_max=3.0,
        )  # fmt: skip
