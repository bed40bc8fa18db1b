from pathlib import Path

from pipelines import demo

ROOT = Path(__file__).resolve().parents[1]


def test_config_table_counts():
    rows = {r[0]: r for r in demo.config_table()}
    assert rows["D"][1:3] == (16, 138_357_544)
    assert rows["C"][1:3] == (16, 133_638_952)
    assert round(rows["E"][3], 2) == 19.63


def test_dense_demo_score_map_shapes():
    rows = demo.dense_demo(None, [256, 384], demo.IMAGE)
    # grace_hopper.jpg is 606x517 (portrait): Q is the width.
    assert [r[1] for r in rows] == [(300, 256), (450, 384)]
    assert [r[2] for r in rows] == [(3, 2), (8, 6)]
    assert all(len(r[3].split(", ")) == 5 for r in rows)
