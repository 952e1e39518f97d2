"""`kgclip view WORKDIR`: a read-only browser viewer over a harvest's work directory."""
