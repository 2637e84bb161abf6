"""The visual dashboard: a live local page (`lora-tracker dashboard`) and a self-contained
HTML report (`lora-tracker report`), both drawn with Plotly (shipped by the plotly package,
served or inlined: nothing is fetched from the internet).

    data.py     what is shown (SQL -> JSON-ready dicts)
    page.py     the HTML, CSS and JavaScript of the page (page.html)
    server.py   the local web server (HTTP plumbing only)
    gate.py     the request checks: Host, Origin, write token, body; the page's CSP
    writes.py   the write routes (path -> library call), served by POST through the gate
    write.js    the page's side of a write (ltWrite.post)
    rasters.py  which image files are served (PNG, JPEG, WebP, GIF, by content)
"""
