"""Kling's dialect: generations, multi-image, expand, virtual try-on, omni-image, tasks and callbacks."""
