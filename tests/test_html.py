"""util.html: escaping, the summary section, table formatting, image links and atomic saving."""
from __future__ import annotations

import os
from html.parser import HTMLParser
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from util.html import HTML, format_cell

EVIL = '<script>alert(1)</script>&"x"'
EVIL_ESCAPED = '&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;x&quot;'
VOID = {'meta', 'img', 'br', 'link', 'hr', 'input'}


class PageParser(HTMLParser):
    """Collects start tags with attributes and text in document order and checks that tags nest properly."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, object]] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.events.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f'</{tag}> closes {self.stack[-1:]}'
        self.stack.pop()

    def handle_data(self, data):
        if data.strip():
            self.events.append(('#text', data.strip()))


def parse(path: str) -> PageParser:
    parser = PageParser()
    with open(path, encoding='utf-8') as f:
        parser.feed(f.read())
    parser.close()
    assert parser.stack == [], f'unclosed tags {parser.stack}'
    return parser


def texts(parser: PageParser) -> list[str]:
    return [value for kind, value in parser.events if kind == '#text']


def test_all_text_is_escaped(tmp_path):
    page = HTML(str(tmp_path / 'web'), EVIL)
    page.add_header(EVIL)
    page.add_text(EVIL, top=True)
    page.add_table(['name', EVIL], [[EVIL, 1.0]])
    Image.new('L', (4, 4)).save(os.path.join(page.get_image_dir(), 'a.png'))
    page.add_images(['a.png'], [EVIL], ['a.png'])
    path = page.save()

    raw = open(path, encoding='utf-8').read()
    assert '<script>' not in raw and 'alert(1)</script>' not in raw
    assert raw.count(EVIL_ESCAPED) == 6  # title, header, text, table header and cell, caption
    # the parser decodes the entities back to exactly the text that was added
    assert texts(parse(path)).count(EVIL) == 6


def test_file_names_are_safe_in_attributes_and_links_resolve(tmp_path):
    page = HTML(str(tmp_path / 'web'), 'files')
    names = ['a <b>&"x" #?.png', "it's 100%.png", 'plain.png']
    for name in names:
        Image.new('L', (4, 4), 7).save(os.path.join(page.get_image_dir(), name))
    page.add_images(names, ['c1', 'c2', 'c3'], names, width=64)
    raw = open(page.save(), encoding='utf-8').read()
    assert '<b>' not in raw and '"x"' not in raw

    events = parse(str(tmp_path / 'web' / 'index.html')).events
    srcs = [attrs['src'] for tag, attrs in events if tag == 'img']
    hrefs = [attrs['href'] for tag, attrs in events if tag == 'a']
    assert [unquote(s) for s in srcs] == [f'images/{n}' for n in names]
    assert [unquote(h) for h in hrefs] == [f'images/{n}' for n in names]
    for src in srcs:  # every image the page shows exists where the browser will look
        assert (tmp_path / 'web' / unquote(src)).is_file()
    styles = [attrs['style'] for tag, attrs in events if tag == 'img']
    assert styles == ['width:64px'] * 3
    assert texts(parse(str(tmp_path / 'web' / 'index.html')))[-3:] == ['c1', 'c2', 'c3']


def test_top_section_precedes_content_added_earlier(tmp_path):
    page = HTML(str(tmp_path / 'web'), 'results')
    page.add_header('row header')
    page.add_images(['r.png'], ['row caption'], ['r.png'])
    page.add_text('after rows')
    page.add_header('Summary', top=True)
    page.add_table(['metric', 'value'], [['PSNR', 31.123456]], top=True)
    order = texts(parse(page.save()))
    assert order == ['results', 'Summary', 'metric', 'value', 'PSNR', '31.1235',
                     'row header', 'row caption', 'after rows']


def test_table_cell_formatting():
    assert format_cell(0.123456) == '0.1235'
    assert format_cell(np.float32(1.5)) == '1.5000'
    assert format_cell(np.float64(-2.0)) == '-2.0000'
    assert format_cell(7) == '7'
    assert format_cell(np.int64(12)) == '12'
    assert format_cell(True) == 'True'
    assert format_cell(None) == ''
    assert format_cell('subj01') == 'subj01'
    assert format_cell(float('nan')) == 'nan'


def test_bad_table_and_image_rows_raise(tmp_path):
    page = HTML(str(tmp_path / 'web'), 't')
    with pytest.raises(ValueError, match='row 1 has 1 cells but the header has 2'):
        page.add_table(['a', 'b'], [[1, 2], [3]])
    with pytest.raises(ValueError, match='2 images, 1 captions, 2 links'):
        page.add_images(['a.png', 'b.png'], ['a'], ['a.png', 'b.png'])


def test_save_is_atomic_and_refresh_is_optional(tmp_path):
    web = tmp_path / 'web'
    page = HTML(str(web), 'first', refresh=5)
    assert page.get_image_dir() == str(web / 'images') and (web / 'images').is_dir()
    page.add_text('one')
    page.save()
    meta = [attrs for tag, attrs in parse(str(web / 'index.html')).events if tag == 'meta']
    assert meta == [{'http-equiv': 'refresh', 'content': '5'}]

    page = HTML(str(web), 'second')
    page.add_text('two')
    page.save()
    parsed = parse(str(web / 'index.html'))
    assert not [e for e in parsed.events if e[0] == 'meta']
    assert texts(parsed) == ['second', 'two']  # replaced, not appended
    assert sorted(os.listdir(web)) == ['images', 'index.html']  # no temporary file left behind
    assert oct(os.stat(web / 'index.html').st_mode & 0o777) == oct(0o644)
