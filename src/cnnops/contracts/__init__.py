"""Every record that crosses a module or step boundary, each with one writer and one reader: the
bottom of the library, so that steps never import each other to share a type."""
