"""Files that carry identifying metadata, made in the test: a JPEG with EXIF GPS and the phone
that took it, a PDF with an author, and a PNG that decompresses to more than the parser's
memory limit (a "bomb")."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

GPS = (34.5553, 69.2075)  # Kabul
MAKE, MODEL = "Samsung", "SM-A515F"
AUTHOR = "Hamid Karimi"


def gps_photo(seed: int = 0, size: tuple[int, int] = (64, 48)) -> bytes:
    """A JPEG with EXIF GPS (north, east), make, model and capture time. `seed` changes the
    picture so that different seeds are not near-duplicates."""
    image = Image.new("RGB", size)
    pixels = image.load()
    assert pixels is not None
    for x in range(size[0]):
        for y in range(size[1]):
            v = (x * (3 + seed) + y * (5 + 2 * seed) + 40 * seed * ((x // 8 + y // 8) % 2)) % 256
            pixels[x, y] = (v, (v * 7 + seed * 50) % 256, (255 - v) % 256)
    exif = Image.Exif()
    exif[0x010F] = MAKE
    exif[0x0110] = MODEL
    exif[0x0132] = "2026:10:03 09:15:00"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", _dms(GPS[0])
    gps[3], gps[4] = "E", _dms(GPS[1])
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif, quality=90)
    return out.getvalue()


def _dms(degrees: float) -> tuple[float, float, float]:
    d = int(degrees)
    m = int((degrees - d) * 60)
    s = round(((degrees - d) * 60 - m) * 60, 4)
    return (float(d), float(m), s)


def authored_pdf(author: str = AUTHOR) -> bytes:
    """The smallest valid PDF with an info dictionary naming its author, xref offsets exact."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
        b"<< /Author (" + author.encode("latin-1") + b") /Producer (Amanat test) "
        b"/CreationDate (D:20261003091500Z) >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 4 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


def png_bomb(width: int = 16000, height: int = 11000) -> bytes:
    """An RGBA PNG of a few hundred KiB that decodes to width*height*4 bytes (704 MB by
    default: under Pillow's decompression-bomb refusal, over the sandbox's memory limit)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    # One block of rows compressed with a full flush is byte-aligned and self-contained, so the
    # stream is that block repeated, an empty final block, and the Adler-32 of it all.
    rows = 100
    assert height % rows == 0
    block_plain = (b"\x00" * (1 + 4 * width)) * rows
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = deflate.compress(block_plain) + deflate.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(height // rows):
        adler = zlib.adler32(block_plain, adler)
    body = (b"\x78\xda" + block * (height // rows) + b"\x03\x00"
            + struct.pack(">I", adler & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body)
            + chunk(b"IEND", b""))


def authored_docx(author: str = AUTHOR) -> bytes:
    """A minimal Word document whose core properties name its creator and last editor."""
    import zipfile

    ns = "http://schemas.openxmlformats.org/package/2006"
    parts = {
        "[Content_Types].xml": (
            f'<Types xmlns="{ns}/content-types">'
            f'<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
            'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/word/document.xml" ContentType="application/vnd.'
            'openxmlformats-officedocument.wordprocessingml.document.main+xml"/>'
            '<Override PartName="/docProps/core.xml" ContentType="application/vnd.'
            'openxmlformats-package.core-properties+xml"/></Types>'),
        "_rels/.rels": (
            f'<Relationships xmlns="{ns}/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/'
            '2006/relationships/officeDocument" Target="word/document.xml"/>'
            f'<Relationship Id="rId2" Type="{ns}/relationships/metadata/core-properties" '
            'Target="docProps/core.xml"/></Relationships>'),
        "word/document.xml": (
            '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/'
            'main"><w:body><w:p><w:r><w:t>Statement</w:t></w:r></w:p></w:body></w:document>'),
        "docProps/core.xml": (
            f'<cp:coreProperties xmlns:cp="{ns}/metadata/core-properties" '
            'xmlns:dc="http://purl.org/dc/elements/1.1/">'
            f"<dc:creator>{author}</dc:creator><cp:lastModifiedBy>{author}</cp:lastModifiedBy>"
            "</cp:coreProperties>"),
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in parts.items():
            archive.writestr(name, '<?xml version="1.0" encoding="UTF-8"?>' + text)
    return out.getvalue()
