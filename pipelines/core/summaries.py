"""Pictures for TensorBoard, drawn with Pillow (no matplotlib): a confusion matrix a person can
read — class names on both axes, the count in every cell, rows shaded by their share."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_WHITE, _BLUE = np.array([255, 255, 255.0]), np.array([8, 48, 107.0])


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled FreeType font
    except (TypeError, OSError):  # Pillow built without FreeType: its fixed bitmap font
        return ImageFont.load_default()


def confusion_image(matrix: np.ndarray, class_names, cell: int = 64, max_classes: int = 40) -> np.ndarray:
    """uint8 (H, W, 3) picture of a confusion matrix (rows: true class, columns: predicted).

    Cell shade = the row's share (white 0, dark blue 1), the text = the count; the row total is
    printed after each row name. Above `max_classes` classes only the most frequent true classes
    are drawn (a 350-tag matrix is unreadable as a picture)."""
    matrix = np.asarray(matrix, np.int64)
    names = [str(name) for name in class_names]
    if len(names) > max_classes:
        keep = np.sort(np.argsort(-matrix.sum(axis=1), kind="stable")[:max_classes])
        matrix, names = matrix[np.ix_(keep, keep)], [names[index] for index in keep]
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape, np.float64), where=totals > 0)
    font, small = _font(13), _font(11)
    labels = [f"{name[:14]} ({int(total)})" for name, total in zip(names, totals[:, 0])]
    left = 12 + max(int(font.getlength(label)) for label in labels)
    top = 40
    size = len(names)
    image = Image.new("RGB", (left + size * cell + 8, top + size * cell + 24), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 4), "predicted ->", fill="black", font=small)
    draw.text((4, top - 18), "true (count)", fill="black", font=small)
    for column, name in enumerate(names):
        while len(name) > 1 and small.getlength(name) > cell - 6:
            name = name[:-1]
        draw.text((left + column * cell + 3, 22), name, fill="black", font=small)
    for row in range(size):
        y = top + row * cell
        draw.text((4, y + cell // 2 - 7), labels[row], fill="black", font=font)
        for column in range(size):
            x = left + column * cell
            colour = tuple(int(value) for value in _WHITE + shares[row, column] * (_BLUE - _WHITE))
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour, outline=(160, 160, 160))
            text = str(int(matrix[row, column]))
            ink = "white" if shares[row, column] > 0.5 else "black"
            draw.text((x + (cell - font.getlength(text)) / 2, y + cell // 2 - 7), text, fill=ink, font=font)
    return np.asarray(image, np.uint8)
