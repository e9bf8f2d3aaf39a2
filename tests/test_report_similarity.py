"""Tests of tffd_viz.report.similarity: the CKA table and heatmap against the summary numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
from report_fixtures import SECTION_IDS, TAPS, summary_value

pytest_plugins = ("report_fixtures",)


def test_cka_table_is_the_full_a_vs_b_matrix(sections: list, summary: pd.DataFrame) -> None:
    table = sections[SECTION_IDS.index("cka")].tables[0].frame
    assert table["A layer"].tolist() == TAPS and table.columns.tolist()[1:] == [f"B {t}" for t in TAPS]
    for i, tap in enumerate(TAPS):
        assert table.iloc[i, i + 1] == summary_value(
            summary, "linear CKA, A layer vs the same B layer", tap, "A vs B"
        )
    heat = sections[SECTION_IDS.index("cka")].figures[0].data[0]
    np.testing.assert_allclose(np.asarray(heat.z, dtype=float), table.iloc[:, 1:].to_numpy(dtype=float))
