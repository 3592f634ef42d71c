"""The reader's report: the reader's hit rate beside the automatic one, per label."""

from __future__ import annotations

import csv

import pytest

from napari_correlax.evaluate.report import reader_report, write_table
from napari_correlax.evaluate.verdicts import VerdictRow


def row(image, label, auto, reader="", rule="correlation>0"):
    return VerdictRow(image_id=image, study_id="s", split="test", label=label, map=rule,
                      boxes=1, auto_verdict=auto, reader_verdict=reader)


def test_hit_rates_agreement_and_unsure_counted_by_hand(tmp_path):
    rows = [
        row("a", "Mass", "hit", "hit"),
        row("b", "Mass", "miss", "hit"),
        row("c", "Mass", "miss", "unsure"),
        row("d", "Mass", "hit", ""),
        row("a", "Suspicious Calcification", "hit", "miss"),
    ]
    table = reader_report(rows)
    cells = {(r[0], r[1]): r[2:] for r in table.rows}
    # Mass: 4 findings, automatic 2/4 hits; judged 2 (a, b), reader 2/2 hits; 1 unsure;
    # agreement: a agrees, b does not -> 1/2
    assert cells[("Mass", "correlation>0")] == [4, 0.5, 2, 1.0, 1, 0.5, 0]
    calc = cells[("Suspicious Calcification", "correlation>0")]
    assert calc == [1, 1.0, 1, 0.0, 0, 0.0, 0]
    # pooled: 5 findings, automatic 3/5; judged 3, reader 2/3; 1 unsure; agree 1/3
    pooled = cells[("All findings", "correlation>0")]
    assert pooled[:3] == [5, pytest.approx(0.6), 3]
    assert pooled[3] == pytest.approx(2 / 3) and pooled[4] == 1
    assert pooled[5] == pytest.approx(1 / 3)
    csv_path, md_path = write_table(table, tmp_path / "reader-report")
    with open(csv_path, newline="", encoding="utf-8") as fh:
        read = list(csv.reader(fh))
    assert read[0][:3] == ["Finding", "Map", "Findings"] and len(read) == 4
    assert "Reader hit rate" in md_path.read_text()


def test_a_label_nobody_judged_has_a_blank_reader_rate():
    table = reader_report([row("a", "Mass", "hit")])
    (mass, _pooled) = table.rows
    assert mass[5] is None and mass[7] is None and mass[4] == 0


def test_marked_false_positives_and_normal_images_are_counted_apart():
    fp = VerdictRow(image_id="n", study_id="s", split="test", label="Mass",
                    map="correlation@10,20", boxes=0, auto_verdict="",
                    reader_verdict="false positive")
    rows = [row("a", "Mass", "hit", "hit"), row("b", "Mass", "miss"),
            row("n", "No Finding", "miss", "hit"), fp]
    table = reader_report(rows)
    cells = {(r[0], r[1]): r[2:] for r in table.rows}
    # Mass: 2 findings (the mark is not one), 1 marked false positive on its correlation map
    assert cells[("Mass", "correlation>0")] == [2, 0.5, 1, 1.0, 0, 1.0, 1]
    # the normal image stands apart and is not pooled with the lesions
    assert cells[("No Finding", "correlation>0")][:4] == [1, 0.0, 1, 1.0]
    assert cells[("All findings", "correlation>0")][0] == 2
    assert cells[("All findings", "correlation>0")][-1] == 1
