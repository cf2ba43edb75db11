"""Static HTML result pages (training progress and test results) built with dominate.

A page has a summary section at the very top (metric tables written at the end of a test run) followed by the
content section (one row of images per epoch or per test slice). All text is HTML-escaped by dominate, and
image paths are percent-encoded before they go into ``src``/``href`` attributes.
"""
from __future__ import annotations

import numbers
import os
import posixpath
from urllib.parse import quote

import dominate
from dominate import tags

from util.checkpoint import atomic_write
from util.util import mkdirs

IMAGE_DIR = 'images'


def format_cell(value: object) -> str:
    """Text of one table cell: reals with 4 decimals, integers and everything else as ``str``; None is empty."""
    if value is None:
        return ''
    if isinstance(value, numbers.Integral):  # bools too
        return str(value)
    if isinstance(value, numbers.Real):
        return f'{float(value):.4f}'
    return str(value)


def image_url(file_name: str) -> str:
    """Relative URL of a file in the page's image folder, percent-encoded so it is safe in an attribute."""
    return quote(posixpath.join(IMAGE_DIR, file_name))


class HTML:
    """An HTML page ``<web_dir>/index.html`` with its images in ``<web_dir>/images``.

    Every ``add_*`` method appends to the content section, or with ``top=True`` to the summary section that
    precedes all content, whenever it is added. Nothing is written until :meth:`save`.
    """

    def __init__(self, web_dir: str, title: str, refresh: int = 0) -> None:
        """refresh: seconds after which a browser reloads the page (0: never)."""
        self.web_dir = web_dir
        self.title = title
        self.img_dir = os.path.join(web_dir, IMAGE_DIR)
        mkdirs([web_dir, self.img_dir])
        self.doc = dominate.document(title=title)
        if refresh > 0:
            with self.doc.head:
                tags.meta(http_equiv='refresh', content=str(int(refresh)))
        with self.doc:
            self.summary = tags.div(id='summary')
            self.content = tags.div(id='content')
        self.sources: dict[str, str] = {}

    def claim_name(self, name: str, source: str) -> None:
        """Reserve the image name ``name`` for the input ``source``; ValueError when another input has it (their
        images would overwrite each other)."""
        if self.sources.setdefault(name, source) != source:
            raise ValueError(f'{self.sources[name]} and {source} would both be saved as "{name}" in {self.img_dir}: '
                             f'rename one of them')

    def get_image_dir(self) -> str:
        """Folder where callers save the images they add with :meth:`add_images`."""
        return self.img_dir

    def _section(self, top: bool) -> tags.div:
        return self.summary if top else self.content

    def add_header(self, text: str, top: bool = False) -> None:
        """A third-level heading."""
        self._section(top).add(tags.h3(text))

    def add_text(self, text: str, top: bool = False) -> None:
        """A paragraph of plain text."""
        self._section(top).add(tags.p(text))

    def add_table(self, header: list[str], rows: list[list], top: bool = False, align: str = 'right') -> None:
        """A table with one header row; numbers are formatted by :func:`format_cell`; cells aligned ``align``."""
        for i, row in enumerate(rows):
            if len(row) != len(header):
                raise ValueError(f'table row {i} has {len(row)} cells but the header has {len(header)}: {row!r}')
        table = tags.table(border=1, style=f'border-collapse: collapse; text-align: {align}')
        with table:
            with tags.tr():
                for name in header:
                    tags.th(str(name), style='padding: 2px 8px')
            for row in rows:
                with tags.tr():
                    for cell in row:
                        tags.td(format_cell(cell), style='padding: 2px 8px')
        self._section(top).add(table)

    def add_images(self, ims: list[str], txts: list[str], links: list[str], width: int = 256,
                   top: bool = False) -> None:
        """One row of images, each shown ``width`` pixels wide, linked to ``links[i]`` and captioned ``txts[i]``.

        ``ims`` and ``links`` are file names inside :meth:`get_image_dir`.
        """
        if not len(ims) == len(txts) == len(links):
            raise ValueError(f'add_images needs as many captions and links as images, '
                             f'got {len(ims)} images, {len(txts)} captions, {len(links)} links')
        table = tags.table(border=1, style='table-layout: fixed;')
        with table:
            with tags.tr():
                for im, txt, link in zip(ims, txts, links):
                    with tags.td(style='word-wrap: break-word; text-align: center; vertical-align: top'):
                        with tags.p():
                            with tags.a(href=image_url(link)):
                                tags.img(style=f'width:{int(width)}px', src=image_url(im))
                            tags.br()
                            tags.span(txt)
        self._section(top).add(table)

    def save(self) -> str:
        """Write ``<web_dir>/index.html`` atomically (temporary file + rename) and return its path."""
        path = os.path.join(self.web_dir, 'index.html')
        atomic_write(lambda f: f.write(self.doc.render()), path, binary=False)   # the umask's permissions
        return path
