"""torch's ONNX exporter's Python warnings (an LSTM exported with a batch size other than 1, constant folding
skipped) go to edgekd's debug log instead of being printed raw amid its own lines; the export still happens."""

from __future__ import annotations

import logging
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from edgekd.export.torch_log import quiet_torch_exporter


class _Tagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding, self.lstm, self.head = nn.Embedding(20, 8), nn.LSTM(8, 8, batch_first=True), nn.Linear(8, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(self.embedding(ids))[0][:, -1])


def test_an_lstm_export_warns_only_in_the_debug_log(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    ids = torch.randint(0, 20, (3, 5))
    with caplog.at_level(logging.DEBUG, logger="edgekd"), quiet_torch_exporter():
        torch.onnx.export(_Tagger().eval(), (ids,), str(tmp_path / "m.onnx"), input_names=["ids"], dynamo=False,
                          dynamic_axes={"ids": {0: "batch", 1: "sequence"}})
    printed = capfd.readouterr()
    assert "Warning" not in printed.err + printed.out
    assert any("torch's ONNX exporter warned: UserWarning" in message for message in caplog.messages)
    assert onnx.load(str(tmp_path / "m.onnx")).graph.node
