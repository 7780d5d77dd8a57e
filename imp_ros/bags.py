"""Read and write ROS 1 ``.bag`` and ROS 2 bags (sqlite3, mcap) with rosbags, as rclpy messages.

ROS 2 bags hand their raw CDR bytes straight to ``rclpy.serialization``; ROS 1 messages are converted field by
field into the ROS 2 typestore (names such as CameraInfo ``K`` -> ``k``; ``Header.seq`` is dropped).
"""
from __future__ import annotations

import importlib
import io
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from imp_core.errors import ImpError
from imp_core.imageio import read_image

STORAGES = ("mcap", "sqlite3", "ros1")
_NUMPY = {
    "bool": np.bool_, "byte": np.uint8, "char": np.uint8, "int8": np.int8, "uint8": np.uint8, "int16": np.int16,
    "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32, "int64": np.int64, "uint64": np.uint64,
    "float32": np.float32, "float64": np.float64,
}


class BagError(ImpError, RuntimeError):
    """A bag that cannot be opened or read (the message names the file)."""


def _stores():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED), get_typestore(Stores.ROS1_NOETIC)


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy class."""
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def _field(obj, name: str):
    for n in (name, name.upper(), name.lower()):
        if hasattr(obj, n):
            return getattr(obj, n)
    return None


def convert(obj, msgtype: str, dst):
    """Copy a rosbags message object into typestore ``dst``'s class of the same type, matching fields by name."""
    from rosbags.typesys.store import Nodetype

    kwargs = {}
    for name, (nt, spec) in dst.fielddefs[msgtype][1]:
        val = _field(obj, name)
        if nt == Nodetype.NAME:
            kwargs[name] = convert(val, spec, dst)
        elif nt == Nodetype.BASE:
            base = spec[0]
            kwargs[name] = val if val is not None else ("" if base == "string" else (False if base == "bool" else 0))
        else:
            (ent, espec), _ = spec
            val = [] if val is None else val
            if ent == Nodetype.NAME:
                kwargs[name] = [convert(v, espec, dst) for v in val]
            elif espec[0] in _NUMPY:
                kwargs[name] = np.asarray(val, dtype=_NUMPY[espec[0]])
            else:
                kwargs[name] = list(val)
    return dst.types[msgtype](**kwargs)


def _header_ns(msg) -> Optional[int]:
    h = getattr(msg, "header", None)
    if h is None:
        return None
    ns = int(h.stamp.sec) * 1_000_000_000 + int(h.stamp.nanosec)
    return ns or None


# ---------------------------------------------------------------- salvaging truncated mcap files
# The mcap library parses the records (its StreamReader needs no summary section); what it cannot do is read a
# file cut in the middle of a record, so reads here stop cleanly at the cut and the cut chunk is read as far as
# its bytes go.
_MCAP_MAGIC = b"\x89MCAP0\r\n"


def _mcap_files(path: Path) -> List[Path]:
    if path.is_file():
        return [path] if path.suffix == ".mcap" else []
    return sorted(path.glob("*.mcap")) if path.is_dir() else []


class _Exact(io.BytesIO):
    """A byte stream whose short reads raise mcap's EndOfFile (mcap's reader would return a cut record as if whole)."""

    def read(self, n=-1):
        out = super().read(n)
        if n is not None and 0 <= n != len(out):
            from mcap.exceptions import EndOfFile

            raise EndOfFile()
        return out


def _partial_decompress(data: bytes, compression: str) -> bytes:
    """As much of a (possibly cut) compressed chunk as decompresses."""
    if compression == "":
        return data
    try:
        if compression == "zstd":
            import zstandard

            return zstandard.ZstdDecompressor().decompressobj().decompress(data)
        if compression == "lz4":
            import lz4.frame

            return lz4.frame.LZ4FrameDecompressor().decompress(data)
    except Exception:  # a cut frame decompresses as far as it goes, or not at all
        return b""
    return b""


def _chunk_records(chunk) -> Iterator:
    """The complete records of a (possibly cut) mcap Chunk."""
    from mcap.exceptions import McapError
    from mcap.stream_reader import StreamReader

    try:
        yield from StreamReader(_Exact(_partial_decompress(chunk.data, chunk.compression)), skip_magic=True).records
    except (McapError, ValueError):  # EndOfFile at the cut
        return


def _mcap_records(data: bytes) -> Iterator:
    """mcap records (chunks expanded) of a possibly truncated file, up to the cut; a chunk cut by the truncation
    gives the records it still holds."""
    import struct

    from mcap.data_stream import ReadDataStream
    from mcap.exceptions import McapError
    from mcap.opcode import Opcode
    from mcap.records import Chunk
    from mcap.stream_reader import StreamReader

    stream = _Exact(data)
    end = len(_MCAP_MAGIC)  # where the first unread record starts
    try:
        for rec in StreamReader(stream, emit_chunks=True).records:
            end = stream.tell()
            yield from _chunk_records(rec) if isinstance(rec, Chunk) else (rec,)
    except (McapError, ValueError):  # EndOfFile at the cut (or damage): what follows is salvaged below
        pass
    if data[end: end + 1] == bytes([Opcode.CHUNK]):
        try:  # a plain stream: the cut chunk's data field comes back short instead of failing
            cut = Chunk.read(ReadDataStream(io.BytesIO(data[end + 9:])))
        except (McapError, ValueError, struct.error):
            return
        yield from _chunk_records(cut)


def salvage_mcap(path, topics: Optional[Iterable[str]] = None
                 ) -> Tuple[Dict[str, str], List[Tuple[str, int, str, bytes]]]:
    """Read the intact part of (possibly truncated) mcap files without their summary section: ({topic: msgtype},
    [(topic, log_time_ns, msgtype, cdr bytes)]) in file order. Raises BagError when nothing is readable."""
    from mcap.records import Channel, Message, Schema

    path = Path(path)
    files = _mcap_files(path)
    if not files:
        raise BagError(f"bag {path}: no .mcap file to salvage")
    want = None if topics is None else set(topics)
    types: Dict[str, str] = {}
    out: List[Tuple[str, int, str, bytes]] = []
    for f in files:
        data = f.read_bytes()
        if not data.startswith(_MCAP_MAGIC):
            raise BagError(f"bag {f} is not an mcap file (bad magic)")
        schemas: Dict[int, str] = {}
        channels: Dict[int, Tuple[str, str, str]] = {}  # id -> topic, msgtype, encoding
        for rec in _mcap_records(data):
            if isinstance(rec, Schema):
                schemas[rec.id] = rec.name
            elif isinstance(rec, Channel):
                channels[rec.id] = (rec.topic, schemas.get(rec.schema_id, ""), rec.message_encoding)
                if schemas.get(rec.schema_id):
                    types.setdefault(rec.topic, schemas[rec.schema_id])
            elif isinstance(rec, Message):
                ch = channels.get(rec.channel_id)
                if ch is None or ch[2] != "cdr" or not ch[1] or (want is not None and ch[0] not in want):
                    continue
                out.append((ch[0], rec.log_time, ch[1], rec.data))
    if not types:
        raise BagError(f"bag {path}: no readable channel in the mcap data")
    return types, out


def _has_mcap(path: Path) -> bool:
    return bool(_mcap_files(path))


def _warn(warn, text: str) -> None:
    import logging

    (warn or logging.getLogger(__name__).warning)(text)


def read_bag(path, topics: Optional[Iterable[str]] = None,
             remap: Optional[Dict[str, str]] = None, warn=None) -> Iterator[Tuple[str, int, object]]:
    """Yield (topic after remapping, stamp_ns, rclpy message) in bag order. The stamp is the header stamp when the
    message has one, else the bag's receive time. ``topics`` filters by the bag's own topic names.

    A truncated mcap (no summary, a cut chunk) is salvaged: the readable messages are yielded and ``warn`` (default:
    the logging module) gets one line with their count."""
    from rclpy.serialization import deserialize_message
    from rosbags.highlevel import AnyReader

    path = Path(path)
    if not path.exists():
        raise BagError(f"bag {path} does not exist")
    remap = dict(remap or {})
    ts2, _ = _stores()
    yielded = 0
    try:
        with AnyReader([path], default_typestore=ts2) as reader:
            conns = [c for c in reader.connections if topics is None or c.topic in set(topics)]
            if topics is not None and not conns:
                have = sorted({c.topic for c in reader.connections})
                raise BagError(f"bag {path} has none of the topics {sorted(topics)}; it has {have}")
            for conn, t_ns, raw in reader.messages(connections=conns):
                cls = message_class(conn.msgtype)
                if reader.is2:
                    msg = deserialize_message(bytes(raw), cls)
                else:
                    obj = convert(reader.deserialize(raw, conn.msgtype), conn.msgtype, ts2)
                    msg = deserialize_message(bytes(ts2.serialize_cdr(obj, conn.msgtype)), cls)
                yielded += 1
                yield remap.get(conn.topic, conn.topic), _header_ns(msg) or int(t_ns), msg
    except BagError:
        raise
    except Exception as e:  # rosbags raises several unrelated types for truncated/corrupt files
        if yielded or not _has_mcap(path):
            raise BagError(f"cannot read bag {path}: {type(e).__name__}: {e}") from e
        cause = f"{type(e).__name__}: {e}"
    else:
        return
    types, raw = salvage_mcap(path, topics)
    if topics is not None and not set(topics) & set(types):
        raise BagError(f"bag {path} has none of the topics {sorted(topics)}; it has {sorted(types)}")
    _warn(warn, f"bag {path} is truncated or damaged ({cause}); salvaged {len(raw)} readable messages "
                f"({', '.join(f'{t}: {sum(r[0] == t for r in raw)}' for t in sorted({r[0] for r in raw}))})")
    for topic, t_ns, msgtype, data in raw:
        msg = deserialize_message(bytes(data), message_class(msgtype))
        yield remap.get(topic, topic), _header_ns(msg) or int(t_ns), msg


def bag_topics(path) -> Dict[str, str]:
    """{topic: msgtype} of a bag (of its readable part for a truncated mcap)."""
    from rosbags.highlevel import AnyReader

    ts2, _ = _stores()
    try:
        with AnyReader([Path(path)], default_typestore=ts2) as reader:
            return {c.topic: c.msgtype for c in reader.connections}
    except Exception as e:
        if _has_mcap(Path(path)):
            try:
                return salvage_mcap(path)[0]
            except BagError:
                pass
        raise BagError(f"cannot read bag {path}: {type(e).__name__}: {e}") from e


class BagSink:
    """Writes (topic, stamp_ns, rclpy message) as they come to several bags at once (``targets``: {storage: path},
    storages as in STORAGES); ``topics`` = {topic: msgtype}; ``latched`` topics are written as latched / transient
    local (e.g. /tf_static)."""

    def __init__(self, targets: Dict[str, Path], topics: Dict[str, str], latched: Sequence[str] = ()) -> None:
        from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

        self._ts2, self._ts1 = _stores()
        if "tf2_msgs/msg/TFMessage" not in self._ts1.types:  # rosbags' Noetic store lacks tf2_msgs
            from rosbags.typesys import get_types_from_msg

            self._ts1.register(get_types_from_msg("geometry_msgs/TransformStamped[] transforms",
                                                  "tf2_msgs/msg/TFMessage"))
        self.types = dict(topics)
        self._writers = []
        try:
            for storage, path in targets.items():
                if storage == "ros1":
                    from rosbags.rosbag1 import Writer as Writer1

                    w = Writer1(path)
                    w.open()
                    conns = {t: w.add_connection(t, mt, typestore=self._ts1, latching=1 if t in latched else None)
                             for t, mt in topics.items()}
                elif storage in ("mcap", "sqlite3"):
                    from rosbags.rosbag2 import StoragePlugin, Writer

                    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
                    w = Writer(path, version=9, storage_plugin=plugin)
                    w.open()
                    zero = QosTime(0, 0)
                    static = Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
                                 zero, zero, QosLiveliness.AUTOMATIC, zero, False)
                    conns = {t: w.add_connection(t, mt, typestore=self._ts2,
                                                 offered_qos_profiles=[static] if t in latched else ())
                             for t, mt in topics.items()}
                else:
                    raise ValueError(f"unknown bag storage {storage!r}; choose one of {STORAGES}")
                self._writers.append((storage, w, conns))
        except BaseException:
            self.close()
            raise

    def write(self, topic: str, stamp_ns: int, msg) -> None:
        from rclpy.serialization import serialize_message

        raw = serialize_message(msg)
        mt = self.types[topic]
        for storage, w, conns in self._writers:
            if storage == "ros1":
                obj1 = convert(self._ts2.deserialize_cdr(raw, mt), mt, self._ts1)
                w.write(conns[topic], int(stamp_ns), self._ts1.serialize_ros1(obj1, mt))
            else:
                w.write(conns[topic], int(stamp_ns), raw)

    def close(self) -> None:
        for _, w, _ in self._writers:
            w.close()
        self._writers = []


def write_bag(path, messages: List[Tuple[str, int, object]], storage: str = "mcap") -> Path:
    """Write (topic, stamp_ns, rclpy message) tuples to a ROS 2 bag directory (mcap/sqlite3) or a ROS 1 .bag."""
    if storage not in STORAGES:
        raise ValueError(f"unknown bag storage {storage!r}; choose one of {STORAGES}")
    path = Path(path)
    types: Dict[str, str] = {}
    for topic, _, msg in messages:
        types.setdefault(topic, type(msg).__module__.split(".")[0] + "/msg/" + type(msg).__name__)
    sink = BagSink({storage: path}, types)
    try:
        for topic, stamp, msg in messages:
            sink.write(topic, stamp, msg)
    finally:
        sink.close()
    return path


def query_messages(q, rgb: np.ndarray, stamp_ns: int, frame_id: str, image_topic: str, info_topic: str,
                   gt_topic: str, encoding: str = "rgb8", compressed: bool = False,
                   map_frame: str = "map") -> List[Tuple[str, int, object]]:
    """The bag messages of one dataset query (``QueryItem``) and its image: CameraInfo, the ground-truth camera
    PoseStamped in ``map_frame`` when known, and the Image (JPEG CompressedImage on <topic>/compressed)."""
    from geometry_msgs.msg import PoseStamped

    from imp_ros import conversions as cv  # lazy: ROS message packages; reading bags needs only rosbags

    out = [(info_topic, stamp_ns, cv.camera_to_info(q.camera, frame_id, stamp_ns))]
    if q.gt_pose is not None:
        ps = PoseStamped(pose=cv.pose_to_msg(q.gt_pose.inverse()))
        ps.header.frame_id, ps.header.stamp = map_frame, cv.ns_to_stamp(stamp_ns)
        out.append((gt_topic, stamp_ns, ps))
    if compressed:
        out.append((image_topic + "/compressed", stamp_ns, cv.rgb_to_compressed(rgb, "jpeg", frame_id, stamp_ns)))
    else:
        out.append((image_topic, stamp_ns, cv.rgb_to_image(rgb, encoding, frame_id, stamp_ns)))
    return out


def is_bag(path) -> bool:
    p = Path(path)
    if p.is_file():
        return p.suffix in (".bag", ".mcap", ".db3")
    return (p / "metadata.yaml").is_file()


def dataset_to_bag(dataset, path, storage: str = "mcap", condition: Optional[str] = None,
                   image_topic: str = "/camera/image_raw", info_topic: str = "/camera/camera_info",
                   gt_topic: str = "/ground_truth/camera_pose", frame_id: str = "camera_optical",
                   encoding: str = "rgb8", max_frames: int = 0) -> Path:
    """Write a dataset's queries (time order) as a bag: Image + CameraInfo + ground-truth camera PoseStamped in
    ``map`` per frame, stamped with the query stamps (10 Hz when the dataset has none)."""

    items = sorted(dataset.queries(condition), key=lambda q: (q.stamp or 0.0, q.name))
    if max_frames:
        items = items[:max_frames]
    msgs = []
    for i, q in enumerate(items):
        ns = int(round((q.stamp if q.stamp is not None else i * 0.1) * 1e9)) + 1_000_000_000
        try:
            rgb = read_image(q.path)
        except (FileNotFoundError, ValueError) as e:
            raise BagError(f"cannot read image {q.path} for bag {path}: {e}") from e
        msgs += query_messages(q, rgb, ns, frame_id, image_topic, info_topic, gt_topic, encoding)
    return write_bag(path, msgs, storage)
