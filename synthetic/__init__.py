"""Synthetic product photos: the demo data set (``stages/demo.py``) and bench/scale.py's sets.

A test fixture and benchmark generator, not part of the retrieval library. Its public API, by
module (callers import the modules, so that tests/test_dvc_contract.py can follow them):

- :mod:`synthetic.products`: ``class_design`` (a class's made-up product), ``render_design``,
  ``seeded_rng``
- :mod:`synthetic.photos`: ``render_photo`` (a shelf photo), ``render_catalog``, ``save_jpeg``
- :mod:`synthetic.dataset`: ``make_demo`` (the demo set of the ``demo`` params, in its own folder),
  ``write_set`` and ``write_class`` (any counts, in the competition layout), ``demo_plan``,
  ``class_name``, ``image_id``, ``is_demo_root``, ``check_demo_folder``, ``MARKER``
"""
