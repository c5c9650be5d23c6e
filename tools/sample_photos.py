"""Write scikit-image's bundled public-domain / CC0 photos as JPEGs, for the demo, and
their ImageNet labels beside the folder (not in it: `explain` would report the list as a
file that is no image).

    python tools/sample_photos.py demo_out/photos       # + demo_out/labels.csv
"""

import os
import sys

PHOTOS = ("chelsea", "coffee", "stereo_motorcycle", "rocket", "astronaut")
# ImageNet classes (SPEC.md section 4); astronaut has none and is left out of labels.csv.
LABELS = {"chelsea": 285, "coffee": 967, "stereo_motorcycle": 665, "rocket": 657}


def main(argv=None):
    from PIL import Image
    from skimage import data

    folder = (argv or sys.argv[1:] or ["demo_out/photos"])[0]
    os.makedirs(folder, exist_ok=True)
    for name in PHOTOS:
        image = getattr(data, name)()
        if isinstance(image, tuple):  # stereo_motorcycle is a (left, right, disparity) triple
            image = image[0]
        Image.fromarray(image).save(os.path.join(folder, f"{name}.jpg"), quality=95)
    parent = os.path.dirname(os.path.abspath(folder))
    sub = os.path.basename(os.path.abspath(folder))
    with open(os.path.join(parent, "labels.csv"), "w", encoding="utf-8") as fh:
        fh.writelines(f"{sub}/{name}.jpg,{label}\n" for name, label in LABELS.items())
    print(f"wrote {len(PHOTOS)} photos to {folder} and their labels to {os.path.join(parent, 'labels.csv')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
