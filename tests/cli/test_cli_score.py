"""``leakaudit score ORIGINALS RECONSTRUCTIONS``: the recognition test on reconstructions made anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageFilter, ImageOps

from leakaudit.cli import app_main

SAMPLES = Path(__file__).resolve().parents[2] / "examples" / "samples"


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """Originals: the six bundled photos. Reconstructions, named like them: a mirrored astronaut and camera
    (recognisable), a heavy blur of chelsea and a mean-colour blank of coffee (trivial); retina and rocket have
    none (not scored)."""
    orig, recon = tmp_path / "orig", tmp_path / "recon"
    orig.mkdir()
    recon.mkdir()
    for path in sorted(SAMPLES.glob("*.png")):
        image = Image.open(path).convert("RGB")
        image.save(orig / path.name)
        name = path.stem
        if name in ("astronaut", "camera"):
            ImageOps.mirror(image).save(recon / f"{name}.png")
        elif name == "chelsea":
            image.filter(ImageFilter.GaussianBlur(3)).save(recon / f"{name}.png")
        elif name == "coffee":
            Image.new("RGB", image.size, image.resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))).save(
                recon / f"{name}.png")
    (recon / "extra.png").write_bytes((recon / "coffee.png").read_bytes())  # no original of that name
    return orig, recon


def test_json_on_stdout_says_which_reconstructions_are_recognised(folders, capsys):
    orig, recon = folders
    assert app_main(["score", str(orig), str(recon), "--output", "-"]) == 1  # something is recognised
    doc = json.loads(capsys.readouterr().out)
    by_name = {s["name"]: s for s in doc["samples"]}
    assert set(by_name) == {"astronaut", "camera", "chelsea", "coffee"}
    for name in ("astronaut", "camera"):
        assert by_name[name]["recognised"] and by_name[name]["transform"].startswith("flipped")
        assert by_name[name]["references"] == 64 + 5 and by_name[name]["match_p"] == pytest.approx(1 / 70)
        assert by_name[name]["similarity"]["ssim"] < 0.5  # raw SSIM of a mirror image: similarity, not verdict
    for name in ("chelsea", "coffee"):
        assert not by_name[name]["recognised"] and by_name[name]["ssim_skill"] < 0.1
    assert doc["summary"]["recognised"] == 2 and "1/70" in doc["summary"]["text"]
    assert "extra" in doc["notes"][0]
    assert doc["references"]["bundled"] is True


def test_the_table_and_exit_0_when_nothing_is_recognised(folders, capsys):
    orig, recon = folders
    for name in ("astronaut", "camera"):
        (recon / f"{name}.png").unlink()
    assert app_main(["score", str(orig), str(recon), "--output", str(recon.parent / "score.json")]) == 0
    out = capsys.readouterr().out
    assert "0 of 2 recognised" in out and "chance with probability 1/70" in out
    assert json.loads((recon.parent / "score.json").read_text())["summary"]["recognised"] == 0


def test_own_reference_data_counts_and_copies_of_the_sample_are_left_out(folders, capsys):
    orig, recon = folders
    # the originals themselves as --reference-data: each sample's own copy is left out of its references
    assert app_main(["score", str(orig), str(recon), "--reference-data", str(orig), "--output", "-"]) == 1
    doc = json.loads(capsys.readouterr().out)
    astronaut = next(s for s in doc["samples"] if s["name"] == "astronaut")
    assert astronaut["recognised"] and astronaut["references"] == 5
    assert doc["references"]["bundled"] is False


@pytest.mark.parametrize("case, message", [
    ("missing", "no such folder; give the folder of reconstruction images"),
    ("unnamed", "no file has the name of an original"),
])
def test_bad_folders_are_one_line_exit_2(folders, tmp_path, capsys, case, message):
    orig, recon = folders
    if case == "missing":
        recon = tmp_path / "nowhere"
    else:
        for p in recon.iterdir():
            p.rename(recon / f"x-{p.name}")
    assert app_main(["score", str(orig), str(recon)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
