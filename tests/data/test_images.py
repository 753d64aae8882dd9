"""retrieval/data/images.py: which test ids a submission can hold (scan_test)."""
import io

import pytest
from PIL import Image

from retrieval.data.images import scan_test
from retrieval.io import InputError


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (20, 90, 20)).save(buf, "JPEG")
    return buf.getvalue()


def test_an_apostrophe_in_a_test_id_is_fine_a_double_quote_is_not(tmp_path):
    # the CSV writer and reader treat only double quotes specially (retrieval/results/submission.py)
    (tmp_path / "test" / "query").mkdir(parents=True)
    (tmp_path / "test" / "query" / "l'œuf.jpg").write_bytes(jpeg())
    assert scan_test(tmp_path, "query")["id"].tolist() == ["l'œuf"]
    (tmp_path / "test" / "query" / 'say"cheese.jpg').write_bytes(jpeg())
    with pytest.raises(InputError, match="holds a space, comma or double quote, which a submission"):
        scan_test(tmp_path, "query")
