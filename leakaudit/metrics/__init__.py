"""Reconstruction-quality metrics in pixel space [0, 1]: a functional core (``functional``)."""

from .functional import label_accuracy, mse, pairwise, psnr, rmse, ssim, ssim_best_adjusted

__all__ = ["mse", "rmse", "psnr", "ssim", "ssim_best_adjusted", "label_accuracy", "pairwise"]
