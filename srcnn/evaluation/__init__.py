"""The SR evaluation protocol (Y-PSNR/SSIM with border shave) and benchmark tables."""
