"""``quality``: per-image data-quality scores and flags, one check family per module.

* :mod:`.image`    - dark, light, blurry, low_information, grayscale (cleanvision 0.3.7 definitions)
* :mod:`.geometry` - odd_aspect_ratio, odd_size (cleanvision; odd_size needs every partition's sizes)
* :mod:`.medical`  - near_blank, padding_only (every source) and the DICOM BurnedInAnnotation flag
* :mod:`.stage`    - the GlobalStage: ``map`` scores a partition, ``reduce`` sets the global
  odd-size fences and writes the ``quality`` table and, for checks with ``action: remove``,
  filter decisions (method ``quality:<check>``, no representative).
"""
