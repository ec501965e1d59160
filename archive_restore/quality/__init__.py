"""Quality measures: PSNR and SSIM on luma against a reference (``metrics``), NIQE without one (``niqe``)."""
