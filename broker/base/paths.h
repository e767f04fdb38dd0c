/* paths.h - where chorusd finds the files it serves by default (the demo page
 * and the JS SDK): beside an installed chorusd, or in the build's source tree.
 *
 * An installed chorusd (cmake --install, the .deb, the container image) looks
 * in <its bin dir>/<rel>, e.g. /usr/bin/../share/chorus/www; a chorusd run
 * from the build tree finds nothing there and uses the source directory the
 * build compiled in, so the dev quick start needs no flag. */
#ifndef CHORUS_PATHS_H
#define CHORUS_PATHS_H

/* A malloc'd directory: <dir of /proc/self/exe>/<rel> when it holds `probe`,
 * else a copy of `fallback`. */
char *paths_data_dir(const char *rel, const char *probe, const char *fallback);

#endif
