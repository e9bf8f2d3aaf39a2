"""tffd-viz: explore baseline vs Tf-FD-trained networks in the browser.

Run with ``streamlit run app.py``. This file only declares the pages, in the order of the navigation; the
shared sidebar lives in ``app_pages/_sidebar.py``, the caching in ``app_pages/_cache.py``, the drawing helpers
in ``app_pages/_ui.py``, and every computation in the ``tffd_viz`` library.
"""

import streamlit as st

from app_pages._sidebar import sidebar

st.set_page_config(page_title="tffd-viz", page_icon=":material/insights:", layout="wide")

PAGES = {
    "The two models": [
        st.Page("app_pages/overview.py", title="Overview", icon=":material/dashboard:", default=True),
        st.Page("app_pages/what_changed.py", title="What changed", icon=":material/difference:"),
    ],
    "Channels": [
        st.Page("app_pages/ranking.py", title="Channel ranking", icon=":material/sort:"),
        st.Page(
            "app_pages/ranking_stability.py",
            title="Ranking stability",
            icon=":material/align_vertical_center:",
        ),
        st.Page("app_pages/feature_maps.py", title="Feature maps", icon=":material/grid_view:"),
        st.Page("app_pages/similarity.py", title="Similarity", icon=":material/compare:"),
    ],
    "The loss": [
        st.Page("app_pages/losses.py", title="Losses and lambdas", icon=":material/tune:"),
        st.Page("app_pages/gradients.py", title="Gradient shares", icon=":material/call_split:"),
        st.Page("app_pages/sweep.py", title="Sweep", icon=":material/grid_on:"),
        st.Page("app_pages/whatif.py", title="Try lambdas", icon=":material/science:"),
    ],
    "Representations": [
        st.Page("app_pages/cka.py", title="CKA", icon=":material/blur_on:"),
        st.Page("app_pages/attribution.py", title="Attribution", icon=":material/visibility:"),
        st.Page("app_pages/embeddings.py", title="Embeddings", icon=":material/scatter_plot:"),
        st.Page("app_pages/evolution.py", title="Evolution", icon=":material/timeline:"),
    ],
}

navigation = st.navigation(PAGES, expanded=True)
sidebar()
navigation.run()
