//! Editing a JSON body's top-level members in place, every other byte as sent.
