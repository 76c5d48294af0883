"""The tiny text-to-image recipe both committed models (digits, emoji) are trained with."""
