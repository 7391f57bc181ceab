"""create_dataset end to end: recipes, labels, bad members, shards, ImageNet folders and CSV lists."""
import json
import os

import numpy as np
import pytest

from ebv_ms.data import DataError, DatasetInfo, LayoutError, create_dataset, shard_indices
from ebv_ms.tools import inspect_data as inspect_cli
from ebv_ms.tools.make_demo import write_demo_archive
from ebv_ms.data.presets import IMAGENET_MEAN, IMAGENET_STD, erase_batch, mixup_cutmix
from ebv_ms.tools.make_synthetic import encode, write_zip
from tagged_images import flat_jpeg, read_tag, tagged_image
from ebv_ms.data.zip_index import ArchiveError

TAG = {"image_size": 8, "eval_resize": 8, "eval_crop": 8}  # no resampling: tags survive exactly


def _bad_names(info, epoch):
    """The names of the samples the pipeline skipped in ``epoch``."""
    return [info.source.name(i) for i in info.bad.indices(epoch)]


def _tagged_archive(tmp_path, n, classes=3, extra=None, name="tag.zip"):
    members = {f"ds/train/c{i % classes}/{i:04d}.png": encode(tagged_image(i, i % classes), ".png")
               for i in range(n)}
    members.update(extra or {})
    return write_zip(str(tmp_path / name), members, deflate=[k for k in members if k.endswith("1.png")])


def _epoch(dataset, epochs=1):
    it = dataset.create_dict_iterator(num_epochs=epochs, output_numpy=True)
    out = []
    for _ in range(epochs):
        rows = []
        for b in it:
            for x, y in zip(b["image"], b["label"]):
                tag_id, tag_label = read_tag(x)
                rows.append((tag_id, tag_label, int(y)))
        out.append(rows)
    return out


def _flat_archive(tmp_path, n=24, classes=3, size=32):
    members = {f"train/k{i % classes}/{i}.jpg": flat_jpeg(i % classes, size) for i in range(n)}
    members.update({f"val/k{i % classes}/{i}.jpg": flat_jpeg(i % classes, size) for i in range(9)})
    return write_zip(str(tmp_path / "flat.zip"), members)


@pytest.mark.parametrize("recipe", ["eval", "A0", "A1", "A2"])
def test_recipes_give_right_shapes_dtypes_and_targets(tmp_path, recipe):
    path = _flat_archive(tmp_path)
    training = recipe != "eval"
    ds, info = create_dataset({"path": path, "image_size": 16, "recipe": "A1"}, "train" if training else "val",
                              batch_size=8, is_training=training, recipe=recipe, num_workers=1)
    batches = list(ds.create_dict_iterator(num_epochs=1, output_numpy=True))
    assert len(batches) == info.steps_per_epoch == (3 if training else 2)
    for b in batches:
        img, lab = b["image"], b["label"]
        assert img.dtype == np.float32 and img.shape[1:] == (3, 16, 16)
        if recipe == "A2":
            assert info.soft_targets and lab.dtype == np.float32 and lab.shape == (8, 3)
            np.testing.assert_allclose(lab.sum(1), 1.0, atol=1e-6)
            assert ((lab > 0).sum(1) <= 2).all() and (lab >= 0).all()
        else:
            assert lab.dtype == np.int32 and lab.ndim == 1
    if recipe == "eval":  # flat grey 20 + 20 * label, normalised with ImageNet mean/std
        b = batches[0]
        for x, y in zip(b["image"], b["label"]):
            v = (20 + 20 * y) / 255.0
            expect = [(v - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
            np.testing.assert_allclose(x.mean(axis=(1, 2)), expect, atol=0.05)


def test_resumed_pipeline_repeats_the_uninterrupted_epoch_including_mixup(tmp_path):
    """A2: epoch 1 of a fresh pipeline started at epoch 1 (a resume) has the same order and the
    same mixup/cutmix draws (so the same soft targets) as epoch 1 of one uninterrupted pipeline.
    (The per-image crops and flips come from MindSpore's C++ random streams, which a new
    pipeline restarts: those are not compared.)"""
    path = _flat_archive(tmp_path)
    cfg = {"path": path, "image_size": 16}

    def run(start, epochs):
        ds, info = create_dataset(cfg, "train", batch_size=8, is_training=True, recipe="A2",
                                  num_workers=1, seed=3)
        if start:
            info.set_start_epoch(start)
        it = ds.create_dict_iterator(num_epochs=epochs, output_numpy=True)
        return [[b["label"] for b in it] for _ in range(epochs)]

    whole = run(0, 2)
    resumed = run(1, 1)[0]
    assert len(resumed) == len(whole[1]) == 3
    for ya, yb in zip(whole[1], resumed):
        np.testing.assert_array_equal(ya, yb)
    # epoch 1 is not a replay of epoch 0, so the test cannot pass by restarting the counter
    assert not all(np.array_equal(a, b) for a, b in zip(whole[0], whole[1]))


def test_mixup_cutmix_soft_targets():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(6, 3, 10, 10)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 4, 5])
    kinds = set()
    for batch in range(40):
        mixed, targets = mixup_cutmix(images, labels, 100_000, seed=1, epoch=0, batch=batch)
        assert targets.shape == (6, 100_000) and targets.dtype == np.float32
        np.testing.assert_allclose(targets.sum(1), 1.0, atol=1e-6)
        lam = targets[0, 0] if targets[0, 0] > 0 else 0.0
        if np.allclose(mixed, images * lam + images[::-1] * (1 - lam), atol=1e-5):
            kinds.add("mixup")
        else:  # cutmix: every pixel is from the image or its partner, area matches lambda
            own = np.isclose(mixed, images).all(axis=1)
            assert (own | np.isclose(mixed, images[::-1]).all(axis=1)).all()
            np.testing.assert_allclose(own[0].mean(), lam, atol=1e-6)
            kinds.add("cutmix")
    assert kinds == {"mixup", "cutmix"}
    a = mixup_cutmix(images, labels, 10, seed=3, epoch=2, batch=5)
    b = mixup_cutmix(images, labels, 10, seed=3, epoch=2, batch=5)
    np.testing.assert_array_equal(a[1], b[1])


def test_random_erasing_per_batch():
    images = np.ones((50, 3, 20, 20), np.float32)
    assert erase_batch(images, 0.0, np.random.default_rng(0)) == 0 and images.min() == 1
    assert erase_batch(images, 1.0, np.random.default_rng(0)) == 50
    zero = (images == 0).all(axis=1)  # (B, H, W): erased pixels, same in every channel
    frac = zero.mean(axis=(1, 2))
    assert ((frac >= 0.015) & (frac <= 0.34)).all()
    for z in zero:  # one axis-aligned rectangle each
        rows, cols = np.flatnonzero(z.any(1)), np.flatnonzero(z.any(0))
        assert z[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all() and z.sum() == len(rows) * len(cols)
    some = np.ones((400, 3, 8, 8), np.float32)
    n = erase_batch(some, 0.1, np.random.default_rng(1))
    assert 20 <= n <= 60


def test_every_image_keeps_its_label_with_worker_processes(tmp_path):
    path = _tagged_archive(tmp_path, 30)
    ds, info = create_dataset({"path": path, **TAG, "num_workers": 2, "python_multiprocessing": True},
                              "train", batch_size=4, is_training=False)
    (rows,) = _epoch(ds)
    assert sorted(r[0] for r in rows) == list(range(30))
    assert all(tag_label == y == tag_id % 3 for tag_id, tag_label, y in rows)
    assert info.num_samples == 30 and info.bad_count() == 0


def _bogus_huffman_jpeg() -> bytes:
    good = bytearray(encode(tagged_image(5, 0, 32), ".jpg"))
    i = bytes(good).find(b"\xff\xc4")
    good[i + 5:i + 21] = b"\xff" * 16  # code counts that overflow the code space
    return bytes(good)


def test_precheck_accepts_real_images_and_rejects_broken_ones():
    import io
    from PIL import Image
    from ebv_ms.data.source import precheck
    img = tagged_image(1, 2, 40)
    pil = Image.fromarray(img)
    variants = {"jpeg": encode(img, ".jpg"), "png": encode(img, ".png"), "bmp": encode(img, ".bmp")}
    for mode, kw in (("CMYK", {}), ("L", {}), ("RGB", {"progressive": True}), ("RGB", {"quality": 30})):
        buf = io.BytesIO()
        pil.convert(mode).save(buf, "JPEG", **kw)
        variants[f"{mode}{kw}"] = buf.getvalue()
    for name, data in variants.items():
        assert precheck(data) == "", name
    assert "Huffman" in precheck(_bogus_huffman_jpeg())
    assert precheck(b"") == "empty file"
    assert "not an image" in precheck(b"hello world, not an image")
    assert "truncated JPEG" in precheck(variants["jpeg"][:-300])
    assert "truncated PNG" in precheck(variants["png"][:-20])


def test_bad_members_are_skipped_counted_and_named(tmp_path):
    good = encode(tagged_image(999, 1), ".jpg")
    bad = {
        "ds/train/c2/bad_huffman.jpg": _bogus_huffman_jpeg(),  # would crash MindSpore's decoder
        "ds/train/c0/bad_random.jpg": os.urandom(300),
        "ds/train/c1/bad_empty.jpg": b"",
        "ds/train/c2/bad_truncated.jpg": good[: len(good) // 2],
        "ds/train/c0/bad_text.png": b"this is not an image\n" * 5,
    }
    path = _tagged_archive(tmp_path, 20, extra=bad)
    ds, info = create_dataset({"path": path, **TAG, "num_workers": 2, "python_multiprocessing": True},
                              "train", batch_size=5, is_training=True, recipe="eval", seed=5)
    assert info.num_samples == 25 and info.steps_per_epoch == 5
    e0, e1 = _epoch(ds, epochs=2)
    for rows in (e0, e1):
        assert len(rows) == 25
        assert all(tag_label == y == tag_id % 3 for tag_id, tag_label, y in rows)  # never a wrong label
        assert set(r[0] for r in rows) == set(range(20))
    for epoch in (0, 1):
        assert info.bad_count(epoch) == 5
        assert sorted(_bad_names(info, epoch)) == sorted(bad)
    report = info.bad_report(0)
    assert "5 bad sample(s)" in report and "Huffman" in report and "empty file" in report and "truncated JPEG" in report


def test_one_iterator_per_epoch_still_reshuffles_and_reports_per_epoch(tmp_path):
    path = _tagged_archive(tmp_path, 12, extra={"ds/train/c0/zz_bad.jpg": b"junk"})
    ds, info = create_dataset({"path": path, **TAG, "num_workers": 1}, "train", batch_size=4,
                              is_training=True, recipe="eval", seed=3)
    orders = []
    for epoch in range(3):  # as a training loop that makes a fresh iterator each epoch
        (rows,) = _epoch(ds)
        orders.append([r[0] for r in rows])
        assert info.bad_count(epoch) == 1 and _bad_names(info, epoch) == ["ds/train/c0/zz_bad.jpg"]
    assert len({tuple(o) for o in orders}) == 3
    assert info.bad_count() == 1 and info.sampler._next_epoch == 3


def test_all_bad_data_is_a_clear_error(tmp_path):
    members = {f"train/c/{i}.jpg": b"junk" for i in range(70)}
    path = write_zip(str(tmp_path / "junk.zip"), members)
    ds, _ = create_dataset({"path": path, **TAG, "num_workers": 1}, "train", 4, False)
    with pytest.raises(RuntimeError, match="cannot be decoded"):
        _epoch(ds)


def test_shards_are_disjoint_cover_the_split_and_reshuffle(tmp_path):
    n, shards = 37, 3
    path = _tagged_archive(tmp_path, n)
    per_rank, steps = [], set()
    tag_of = None
    for rank in range(shards):
        ds, info = create_dataset({"path": path, **TAG, "num_workers": 1}, "train", batch_size=4,
                                  is_training=True, recipe="eval", num_shards=shards, shard_id=rank, seed=7)
        steps.add(info.steps_per_epoch)
        tag_of = [int(info.source.name(i).split("/")[-1][:4]) for i in range(n)]  # sample -> tag id
        per_rank.append([[r[0] for r in rows] for rows in _epoch(ds, epochs=2)])
    assert steps == {13 // 4}  # ceil(37 / 3) = 13 samples per rank, 3 full batches each
    assert [create_dataset({"path": path, **TAG}, "train", 4, False, num_shards=shards, shard_id=r)[1]
            .shard_padding for r in range(shards)] == [0, 1, 1]  # 37 = 13 + 12 + 12 real samples
    for epoch in (0, 1):
        full = [shard_indices(n, shards, r, True, 7, epoch) for r in range(shards)]
        assert set(np.concatenate(full).tolist()) == set(range(n))
        assert len(np.concatenate(full)) == 39  # two padded repeats
        seen = [per_rank[r][epoch] for r in range(shards)]
        for r in range(shards):  # the pipeline delivers the sampler's order, minus the partial batch
            assert seen[r] == [tag_of[i] for i in full[r][:12]]
        union = set().union(*map(set, seen))
        assert len(union) >= 36 - 2
        for a in range(shards):
            for b in range(a + 1, shards):
                assert len(set(seen[a]) & set(seen[b])) <= 2
    assert per_rank[0][0] != per_rank[0][1]  # reshuffled every epoch


def test_shard_indices_partition():
    for n, s in [(10, 3), (12, 4), (5, 8)]:
        parts = [shard_indices(n, s, r, True, 1, 0) for r in range(s)]
        assert {len(p) for p in parts} == {-(-n // s)}
        flat = np.concatenate(parts)
        assert set(flat.tolist()) == set(range(n))
        assert len(flat) - n == -(-n // s) * s - n
    assert not np.array_equal(shard_indices(20, 1, 0, True, 1, 0), shard_indices(20, 1, 0, True, 1, 1))
    assert np.array_equal(shard_indices(6, 2, 1, False, 1, 3), [1, 3, 5])
    with pytest.raises(ValueError, match="shard_id"):
        shard_indices(6, 2, 2, False, 0, 0)


def _imagenet_tree(root, with_bad_class=False):
    wnids = ["n03000000", "n01000000", "n02000000"]  # sorted -> 0, 1, 2
    for split, per in (("train", 4), ("val", 2)):
        for w in wnids:
            os.makedirs(root / split / w, exist_ok=True)
            label = sorted(wnids).index(w)
            for k in range(per):
                (root / split / w / f"{w}_{k}.JPEG").write_bytes(flat_jpeg(label, 24))
    return sorted(wnids)


def test_imagenet_folders_via_image_folder_dataset(tmp_path):
    wnids = _imagenet_tree(tmp_path)
    ds, info = create_dataset({"path": str(tmp_path), "image_size": 16, "eval_resize": 16}, "val",
                              batch_size=3, is_training=False, num_workers=1)
    assert info.class_names == wnids and info.num_samples == 6 and "folders" in info.description
    labels = []
    for b in ds.create_dict_iterator(num_epochs=1, output_numpy=True):
        assert b["image"].shape[1:] == (3, 16, 16) and b["label"].dtype == np.int32
        for x, y in zip(b["image"], b["label"]):
            v = (20 + 20 * y) / 255.0
            assert abs(x[0].mean() - (v - IMAGENET_MEAN[0]) / IMAGENET_STD[0]) < 0.05
            labels.append(int(y))
    assert sorted(labels) == [0, 0, 1, 1, 2, 2]
    ds, info = create_dataset({"path": str(tmp_path), "image_size": 16}, "train", batch_size=2,
                              is_training=True, num_shards=2, shard_id=1, num_workers=1)
    assert info.shard_samples == 6 and info.steps_per_epoch == 3
    assert sum(1 for _ in ds.create_dict_iterator(num_epochs=1)) == 3


def test_folder_file_the_decoder_rejects_is_replaced_not_fatal(tmp_path):
    _imagenet_tree(tmp_path)
    broken = bytearray(flat_jpeg(1, 24))
    broken[20:40] = b"\xff" * 20  # MindSpore's decoder raises on this header
    (tmp_path / "val" / "n03000000" / "zz_broken.JPEG").write_bytes(bytes(broken))
    ds, info = create_dataset({"path": str(tmp_path), "image_size": 16, "eval_resize": 16}, "val",
                              batch_size=7, is_training=False, num_workers=1)
    (b,) = list(ds.create_dict_iterator(num_epochs=1, output_numpy=True))
    assert b["image"].shape[0] == 7  # replaced by an earlier good row, image and label together
    for x, y in zip(b["image"], b["label"]):
        v = (20 + 20 * y) / 255.0
        assert abs(x[0].mean() - (v - IMAGENET_MEAN[0]) / IMAGENET_STD[0]) < 0.05


def test_imagenet_csv_lists_with_root(tmp_path):
    _imagenet_tree(tmp_path / "imagenet")
    files = sorted((tmp_path / "imagenet" / "train").rglob("*.JPEG"))
    rows = [f"../train/{f.parent.name}/{f.name},{sorted(['n01000000', 'n02000000', 'n03000000']).index(f.parent.name)}"
            for f in files]
    (tmp_path / "train.csv").write_text("image_id,label\n" + "\n".join(rows) + "\n")
    cfg = {"path": str(tmp_path / "imagenet"), "split_lists": {"train": str(tmp_path / "train.csv")},
           "list_strip_prefix": "../", "image_size": 16, "eval_resize": 16}
    ds, info = create_dataset(cfg, "train", batch_size=4, is_training=False, num_workers=1)
    assert info.num_samples == 12 and info.num_classes == 3
    for b in ds.create_dict_iterator(num_epochs=1, output_numpy=True):
        for x, y in zip(b["image"], b["label"]):
            v = (20 + 20 * y) / 255.0
            assert abs(x[0].mean() - (v - IMAGENET_MEAN[0]) / IMAGENET_STD[0]) < 0.05
    (tmp_path / "train.csv").write_text("image_id,label\n../train/n01000000/missing.JPEG,0\n" + rows[0] + "\n")
    with pytest.raises(LayoutError, match="1 of 2 files missing.*missing.JPEG"):
        create_dataset(cfg, "train", batch_size=1, is_training=False)


def test_clear_errors_for_bad_configs(tmp_path):
    path = _flat_archive(tmp_path)
    with pytest.raises(DataError, match="data.path is not set"):
        create_dataset({}, "train", 4, True)
    with pytest.raises(ArchiveError, match="not found"):
        create_dataset({"path": str(tmp_path / "nope.zip")}, "train", 4, True)
    (tmp_path / "fake.zip").write_bytes(b"PK not really")
    with pytest.raises(ArchiveError, match="not a zip archive"):
        create_dataset({"path": str(tmp_path / "fake.zip")}, "train", 4, True)
    with pytest.raises(DataError, match="3 classes but num_classes=1000"):
        create_dataset({"path": path}, "train", 4, True, num_classes=1000)
    with pytest.raises(DataError, match="fewer than one batch"):
        create_dataset({"path": path}, "train", 64, True)
    with pytest.raises(ValueError, match="unknown augmentation recipe"):
        create_dataset({"path": path, "recipe": "A9"}, "train", 4, True)
    with pytest.raises(ValueError, match="unknown data config key 'imgsize'"):
        create_dataset({"path": path, "imgsize": 3}, "train", 4, True)


def test_demo_archive_and_class_mapping(tmp_path):
    path = write_demo_archive(str(tmp_path), size=16)
    ds, info = create_dataset({"path": path, "image_size": 16, "recipe": "A1"}, "train", 32, True)
    _, val = create_dataset({"path": path, "image_size": 16}, "val", 32, False)
    assert info.class_names == [str(d) for d in range(10)] and info.num_samples + val.num_samples == 1797
    b = next(ds.create_dict_iterator(num_epochs=1, output_numpy=True))
    assert b["image"].shape == (32, 3, 16, 16) and set(b["label"].tolist()) <= set(range(10))
    mapping = json.load(open(info.save_class_mapping(str(tmp_path / "run"))))
    assert mapping["num_classes"] == 10 and mapping["class_names"][3] == "3"
    save_class_mapping = DatasetInfo.save_class_mapping  # the method as a function of (info, dir)
    assert save_class_mapping(info, str(tmp_path / "run2")).endswith("classes.json")


def test_inspect_cli_lists_bad_members(tmp_path, capsys):
    path = _tagged_archive(tmp_path, 6, extra={"ds/train/c1/broken.jpg": b"\xff\xd8\xff garbage"})
    assert inspect_cli.main([path]) == 0
    out = capsys.readouterr().out
    assert "layout folders" in out and "3 classes" in out and "train: 7 samples" in out
    assert inspect_cli.main([path, "--verify"]) == 1
    out = capsys.readouterr().out
    assert "6 good, 1 bad" in out and "ds/train/c1/broken.jpg" in out
    folder = tmp_path / "imagenet"
    _imagenet_tree(folder)
    (folder / "val" / "n01000000" / "broken.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not really")
    assert inspect_cli.main([str(folder), "--verify"]) == 1
    out = capsys.readouterr().out
    assert "3 classes" in out and "val: 6 good, 1 bad" in out and "broken.JPEG" in out
    assert inspect_cli.main([str(tmp_path / "missing.zip")]) == 2
    assert "not found" in capsys.readouterr().err
