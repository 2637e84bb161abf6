"""The visual dashboard: a live local page (`lora-tracker dashboard`) and a self-contained
HTML report (`lora-tracker report`), both drawn with Plotly (shipped by the plotly package,
served or inlined: nothing is fetched from the internet).

    data.py    what is shown (SQL -> JSON-ready dicts)
    page.py    the HTML, CSS and JavaScript of the page
    server.py  the read-only local web server
"""
