"""The book's links to its repository, all derived from `repository.url` in _config.yml, the one place it is set.

Jupyter Book hands that URL to Sphinx as html_theme_options["repository_url"]. When it is set, this turns on the
repository and issues buttons (the Binder and Colab launch buttons are built from it), adds the Sphinx tag
`repository` and fills the MyST substitutions that intro.md uses inside its ```{only} repository``` blocks. When it
is empty, there are no buttons and those blocks are left out: the book never points a reader at a made-up address.
"""


def links(url):
    """MyST substitutions for a repository URL ("" when unset: then nothing may show them)."""
    url = (url or "").strip().rstrip("/")
    return {
        "repository_url": url,
        "repository_link": f"[{url}]({url})" if url else "",
        "pip_install_from_repository": f"`%pip install git+{url}`" if url else "",
        "git_clone": f"`git clone {url}`" if url else "",
    }


def configure(app, config):
    subs = links(config.html_theme_options.get("repository_url"))
    config.html_theme_options["repository_url"] = subs["repository_url"]
    config.html_theme_options["use_repository_button"] = bool(subs["repository_url"])
    config.html_theme_options["use_issues_button"] = bool(subs["repository_url"])
    if subs["repository_url"]:
        app.tags.add("repository")
    else:  # the launch buttons need a repository (sphinx-book-theme fails on a page without one)
        config.html_theme_options["launch_buttons"] = {}
    config.myst_substitutions = {**config.myst_substitutions, **subs}


def setup(app):
    app.connect("config-inited", configure)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
