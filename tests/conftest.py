"""Fixtures shared by the whole suite: a real HTTP server on 127.0.0.1 that
serves files the tests write, and checkpoints that run a command when
unpickled (to check that no loader unpickles them)."""
from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

import pytest
import torch


class Payload:
    """Creates ``marker`` (through ``os.system``) when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


def write_payload_checkpoint(path: Path, marker: Path) -> Path:
    """A checkpoint in the OpenMMLab layout whose ``meta`` runs
    ``touch marker`` when unpickled without ``weights_only``."""
    torch.save(
        {
            'state_dict': {
                'backbone.patch_embed.seq.0.c.weight': torch.ones(1)
            },
            'meta': Payload(marker),
        }, path)
    return path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):

    def log_message(self, format, *args):  # noqa: A002 (the base's name)
        pass


class FileServer:
    """``http.server`` on 127.0.0.1 in a thread, serving ``root``."""

    def __init__(self, root: Path):
        self.root = root
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0),
                                                     handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f'http://127.0.0.1:{self.httpd.server_address[1]}/{name}'

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def file_server(tmp_path, monkeypatch):
    """A :class:`FileServer` of ``tmp_path / 'served'``; torch.hub's
    download cache goes to ``tmp_path / 'torch_home'`` (``TORCH_HOME``, also
    for subprocesses that copy the environment)."""
    root = tmp_path / 'served'
    root.mkdir()
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    server = FileServer(root)
    yield server
    server.close()


@pytest.fixture
def payload(tmp_path, file_server):
    """``(url, local_path, marker)`` of a payload checkpoint: served by
    :func:`file_server` and on disk; ``marker`` must never appear."""
    marker = tmp_path / 'code_ran'
    path = write_payload_checkpoint(file_server.root / 'payload.pth', marker)
    yield file_server.url('payload.pth'), path, marker
    assert not marker.exists(), 'a loader ran the code of the payload'


# --------------------------------------------------------------------------
# Datasets in the real layouts, made once per test run (read only).
# --------------------------------------------------------------------------
@pytest.fixture(scope='session')
def ade_root(tmp_path_factory) -> Path:
    from fcaformer_mm.datasets.synthetic import make_ade20k
    return make_ade20k(
        tmp_path_factory.mktemp('ade') / 'ADEChallengeData2016',
        num_train=4, num_val=2, size=(64, 64))


@pytest.fixture(scope='session')
def coco_root(tmp_path_factory) -> Path:
    from fcaformer_mm.datasets.synthetic import make_coco
    return make_coco(
        tmp_path_factory.mktemp('coco') / 'coco',
        num_train=2, num_val=2, size=(128, 160))


@pytest.fixture(scope='session')
def imagenet_root(tmp_path_factory) -> Path:
    from fcaformer_mm.datasets.synthetic import make_imagenet
    return make_imagenet(
        tmp_path_factory.mktemp('imagenet') / 'imagenet',
        num_classes=4, num_train_per_class=2, num_val_per_class=1,
        size=(64, 64))
