"""Symbol alphabets shared by the data sources and the ARDM math (a leaf module: it imports nothing).

text8 (Mahoney 2006) reduces text to 27 symbols: ' ' -> 0, 'a'..'z' -> 1..26. The text sources read and write
it (`data/text.py`), and the text8 upscale transitions group its letters (`upscale.text8_two_stage`).
"""

TEXT8_ALPHABET = " abcdefghijklmnopqrstuvwxyz"
