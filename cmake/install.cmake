# What `cmake --install` puts where, beyond the targets (installed by their
# own CMakeLists), and the .deb that `cpack -G DEB` makes of the same tree.
#
#   bin/chorusd, bin/chorus, bin/chorus-ticker
#   lib/libchorus-client.a, lib/libchorus_proto.a, lib/pkgconfig/chorus-client.pc
#   include/chorus/{client,http}.h
#   share/chorus/www/         the demo chorusd serves at / (found from bin/, base/paths.h)
#   share/chorus/sdk/         the JS SDK chorusd serves at /sdk/
#   share/chorus/chorusd.env  the systemd unit's environment file, as an example
#   lib/systemd/system/chorusd.service
#   share/doc/chorus/         README, LICENSE, install.md
#
# The .deb installs under CMAKE_INSTALL_PREFIX, so build it with
# -DCMAKE_INSTALL_PREFIX=/usr (docs/install.md, deploy/docker/Dockerfile).

install(FILES
  ${PROJECT_SOURCE_DIR}/client-sdk/js/chorus.js
  ${PROJECT_SOURCE_DIR}/client-sdk/js/chorus.d.ts
  ${PROJECT_SOURCE_DIR}/client-sdk/js/package.json
  DESTINATION ${CMAKE_INSTALL_DATADIR}/chorus/sdk)

configure_file(${PROJECT_SOURCE_DIR}/deploy/systemd/chorusd.service.in
  ${PROJECT_BINARY_DIR}/deploy/chorusd.service @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/deploy/chorusd.service DESTINATION lib/systemd/system)
install(FILES ${PROJECT_SOURCE_DIR}/deploy/systemd/chorusd.env DESTINATION ${CMAKE_INSTALL_DATADIR}/chorus)
install(FILES ${PROJECT_SOURCE_DIR}/README.md ${PROJECT_SOURCE_DIR}/LICENSE
  ${PROJECT_SOURCE_DIR}/docs/install.md
  DESTINATION ${CMAKE_INSTALL_DOCDIR})

set(CPACK_PACKAGE_NAME chorus)
set(CPACK_PACKAGE_VENDOR "Chorus")
set(CPACK_PACKAGE_CONTACT "Chorus maintainers <chorus@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Pub/sub broker over WebSockets, with its C client SDK")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_RESOURCE_FILE_LICENSE ${PROJECT_SOURCE_DIR}/LICENSE)
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
# Depends: from the libraries chorusd and the tools link (dpkg-shlibdeps; libcurl4
# comes in through `chorus` and `chorus-ticker`).
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# Not seen by dpkg-shlibdeps: lws loads its libev plugin at run time, and
# chorusd's default event loop (epoll) is that plugin.
set(CPACK_DEBIAN_PACKAGE_DEPENDS "libwebsockets-evlib-ev")
# The C SDK is static: a program linked against it needs these headers and
# libraries (chorus-client.pc's Requires).
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "libjansson-dev, libwebsockets-dev, libcurl4-openssl-dev, pkg-config")
include(CPack)
