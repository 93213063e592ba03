// Live updates come later; the pages work without this file.
