"""Explanations of the classifiers' decisions (Grad-CAM)."""

from cxrmodels.explain.gradcam import class_score, find_last_conv, grad_cam, grad_cam_images, overlay

__all__ = ["class_score", "find_last_conv", "grad_cam", "grad_cam_images", "overlay"]
